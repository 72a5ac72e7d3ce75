"""Workflow config: defaults, one-line errors naming file/line/field, merging, corpus paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ragd_train.config import (
    deep_merge,
    default_config_path,
    load_config,
    resolve_corpus,
    schema_path,
    validate_config,
)
from ragd_train.errors import InputError
from ragd_train.settings import SECTIONS


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- defaults


def test_defaults_filled_from_the_schema() -> None:
    config = validate_config({"corpora": {"mine": {"source": "jsonl", "path": "x.jsonl"}}})
    assert config["seed"] == 42
    assert config["generate"]["query_generator"] == "auto"
    assert config["generate"]["nollm_strategies"] == ["heading", "ict", "keywords"]
    assert config["embeddings"]["epochs"] == 1
    assert config["embeddings"]["budget_minutes"] == 0 and config["embeddings"]["max_examples"] == 3200
    assert config["encoding"] == {"precision": "auto"}
    assert config["embeddings"]["max_steps"] is None
    assert config["evaluation"]["mode"] == "hybrid" and config["evaluation"]["require_significant"]
    assert config["embeddings"]["matryoshka_dims"] == "auto"
    assert config["mining"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "candidates": 50,
        "bm25_weight": 1.0,
        "relative_margin": 0.05,
        "exclude_same_document": True,
        "batch_size": 64,
        "teacher_pairs": True,
        "teacher_bm25_share": 0.3,
        "roundtrip_top_k": 10,
        "judge_min_score": 3,
    }
    assert config["ollama"]["host"] == "http://localhost:11434"
    corpus = config["corpora"]["mine"]
    assert corpus["chunk_size"] == 800 and corpus["chunk_overlap"] == 100
    assert corpus["glob"] == ["*.md", "*.txt"] and "limit" not in corpus


def test_ollama_host_and_model_come_from_ragds_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One LLM setting: without an ollama: override, ragd's llm.base_url and llm.model are used."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ragd").mkdir()
    (tmp_path / ".ragd" / "config.yaml").write_text(
        "llm:\n  model: qwen2.5:7b\n  base_url: http://gpu-box:11434\n"
    )
    config = load_config()
    assert config["ollama"]["host"] == "http://gpu-box:11434" and config["ollama"]["model"] == "qwen2.5:7b"
    mine = tmp_path / "mine.yaml"
    mine.write_text("ollama:\n  model: llama3.1:8b\n")
    config = load_config([mine])
    assert config["ollama"]["host"] == "http://gpu-box:11434" and config["ollama"]["model"] == "llama3.1:8b"
    (tmp_path / ".ragd" / "config.yaml").write_text("llm: [unclosed\n")
    with pytest.raises(InputError, match=r"\.ragd/config\.yaml:2: invalid YAML"):
        load_config()


def test_default_lists_are_not_shared_between_configs() -> None:
    a = validate_config({"corpora": {"m": {"source": "jsonl", "path": "x"}}})
    a["generate"]["nollm_strategies"].append("crop")
    b = validate_config({"corpora": {"m": {"source": "jsonl", "path": "x"}}})
    assert b["generate"]["nollm_strategies"] == ["heading", "ict", "keywords"]


def test_shipped_config_is_valid_and_every_schema_default_applies() -> None:
    config = load_config()
    assert set(config) == {"seed", "corpora", *SECTIONS}
    schema = yaml.safe_load(schema_path().read_text())
    shipped = yaml.safe_load(default_config_path().read_text())
    for section in SECTIONS:
        for key, sub in schema["properties"][section]["properties"].items():
            assert key in config[section], f"{section}.{key} has no value"
            if key not in shipped.get(section, {}) and "default" in sub:
                assert config[section][key] == sub["default"]
    assert config["corpora"]["demo"]["source"] == "documents"


def test_extra_files_and_overrides_merge_in_order(tmp_path: Path) -> None:
    one = write(tmp_path / "one.yaml", "generate:\n  queries_per_chunk: 4\n  test_ratio: 0.3\n")
    two = write(tmp_path / "two.yaml", "generate:\n  queries_per_chunk: 6\nseed: 1\n")
    config = load_config([one, two], {"generate": {"test_ratio": 0.5}})
    assert config["generate"]["queries_per_chunk"] == 6
    assert config["generate"]["test_ratio"] == 0.5
    assert config["embeddings"]["epochs"] == 1  # the default, untouched
    assert config["seed"] == 1
    assert config["corpora"]["demo"]["path"] == "data/demo"


# ---------------------------------------------------------------- errors


def test_invalid_value_names_file_line_and_field(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml", "seed: 3\ngenerate:\n  queries_per_chunk: 2\nembeddings:\n  epochs: 0\n"
    )
    with pytest.raises(InputError) as info:
        load_config([bad])
    err = info.value
    assert (err.path, err.line, err.field) == (str(bad), 5, "embeddings.epochs")
    message = str(err)
    assert message.startswith(f"{bad}:5: field 'embeddings.epochs': ")
    assert "minimum of 1" in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("mining:\n  bm25_weight: -1\n", 2, "mining.bm25_weight", "minimum"),
        ("generate:\n  query_generator: gpt\n", 2, "generate.query_generator", "gpt"),
        ("embeddings:\n  matryoshka_dims: [64, 4]\n", 2, "embeddings.matryoshka_dims", "64"),
        ("training:\n  matryoshka_dims: [64, 4]\n", 2, "embeddings.matryoshka_dims", "64"),  # deprecated name
        ("corpora:\n  demo:\n    source: chroma\n", 3, "corpora.demo.source", "chroma"),
        ("ollama:\n  timeout: 0\n", 2, "ollama.timeout", "0"),
        ("corpora:\n  mine:\n    path: a\n  bad name!:\n    path: b\n", 4, "corpora.bad name!", "bad name!"),
    ],
)
def test_invalid_values_in_yaml(tmp_path: Path, text: str, line: int, field: str, words: str) -> None:
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), line, field)
    assert words in str(info.value)


def test_unknown_keys_and_missing_keys_rejected(tmp_path: Path) -> None:
    typo = write(tmp_path / "typo.yaml", "embeddings:\n  epoch: 2\n")
    with pytest.raises(InputError) as info:
        load_config([typo])
    assert info.value.field == "embeddings.epoch"
    assert "'epoch' was unexpected" in str(info.value) and "\n" not in str(info.value)
    old = write(tmp_path / "old.yaml", "training:\n  embeding_epochs: 2\n")  # no such old name either
    with pytest.raises(InputError, match="'embeding_epochs' was unexpected"):
        load_config([old])
    root = write(tmp_path / "root.yaml", "trainig:\n  queries_per_chunk: 3\n")
    with pytest.raises(InputError, match="'trainig' was unexpected"):
        load_config([root])
    missing = write(tmp_path / "missing.yaml", "corpora:\n  mine:\n    source: documents\n")
    with pytest.raises(InputError) as info:
        load_config([missing])
    assert info.value.field == "corpora.mine" and "'path' is a required property" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("seed: 1\ntraining:\n  embeding_epochs: 2\n", 3),
        ("seed: 1\ntrainig:\n  queries_per_chunk: 3\n", 2),
        ("seed: 1\ncorpora:\n  mine:\n    source: documents\n", 3),
    ],
)
def test_mapping_errors_name_the_yaml_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert info.value.path == str(bad)
    assert info.value.line in (line, line - 1)  # the offending key, or the mapping holding it


def test_invalid_override_blames_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_config(overrides={"embeddings": {"epochs": 0}})
    assert info.value.path == "command line" and info.value.field == "embeddings.epochs"


def test_chunk_overlap_must_be_below_chunk_size(tmp_path: Path) -> None:
    bad = write(tmp_path / "c.yaml", "corpora:\n  demo:\n    chunk_size: 100\n    chunk_overlap: 100\n")
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert info.value.field == "corpora.demo.chunk_overlap"
    assert "chunk_overlap 100 must be smaller than chunk_size 100" in str(info.value)
    ok = write(tmp_path / "ok.yaml", "corpora:\n  demo:\n    chunk_size: 100\n    chunk_overlap: 99\n")
    assert load_config([ok])["corpora"]["demo"]["chunk_overlap"] == 99
    # The default overlap (100) also counts against a small chunk_size.
    with pytest.raises(InputError, match="chunk_overlap"):
        validate_config({"corpora": {"m": {"source": "jsonl", "path": "x", "chunk_size": 90}}})


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "broken.yaml", "seed: 1\ntraining: [\n")
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert info.value.path == str(bad) and info.value.line == 3
    assert "invalid YAML" in str(info.value)


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])
    with pytest.raises(InputError, match="config must be a mapping"):
        load_config([write(tmp_path / "list.yaml", "- a\n- b\n")])
    # Snakemake refuses an empty config file too; it is named as such (#28 item 11)
    with pytest.raises(InputError, match="empty.yaml: config file is empty"):
        load_config([write(tmp_path / "empty.yaml", "")])


# ---------------------------------------------------------------- deep_merge


def test_deep_merge_recurses_replaces_and_copies() -> None:
    base = {"a": {"x": 1, "y": {"deep": 1, "keep": 2}}, "list": [1, 2], "s": "b"}
    override = {"a": {"y": {"deep": 9}, "z": 3}, "list": [3], "s": {"now": "mapping"}, "new": [{"k": 1}]}
    before = copy.deepcopy(base), copy.deepcopy(override)
    merged = deep_merge(base, override)
    assert merged == {
        "a": {"x": 1, "y": {"deep": 9, "keep": 2}, "z": 3},
        "list": [3],  # lists are replaced, not concatenated
        "s": {"now": "mapping"},
        "new": [{"k": 1}],
    }
    assert (base, override) == before  # inputs untouched
    merged["a"]["y"]["keep"] = 0
    merged["new"][0]["k"] = 0
    assert base["a"]["y"]["keep"] == 2 and override["new"][0]["k"] == 1  # no shared objects


def test_deep_merge_mapping_replaces_scalar_and_none_overrides() -> None:
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": None}) == {"a": None}
    assert deep_merge({}, {}) == {}


# ---------------------------------------------------------------- resolve_corpus


def test_resolve_corpus_prefers_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    workspace, base = tmp_path / "ws", tmp_path / "workflow"
    (workspace / "data" / "demo").mkdir(parents=True)
    (base / "data" / "demo").mkdir(parents=True)
    (base / "data" / "only-here").mkdir(parents=True)
    monkeypatch.chdir(workspace)
    cfg = {"source": "documents", "path": "data/demo", "limit": 3}
    resolved = resolve_corpus(cfg, [base])
    assert resolved == {"source": "documents", "path": str(workspace / "data" / "demo"), "limit": 3}
    assert cfg["path"] == "data/demo"  # the input is not modified
    only = resolve_corpus({"source": "documents", "path": "data/only-here"}, [base])
    assert only["path"] == str(base / "data" / "only-here")


def test_resolve_corpus_absolute_missing_and_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "somewhere"
    assert resolve_corpus({"path": str(absolute)}, [])["path"] == str(absolute)
    # Not found anywhere: resolved against the working directory (the reader reports it missing).
    assert resolve_corpus({"path": "nowhere/x"}, [tmp_path / "b"])["path"] == str(tmp_path / "nowhere" / "x")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_corpus({"path": "~/docs"}, [])["path"] == str(tmp_path / "docs")


def test_shipped_demo_corpus_resolves_against_the_workflow_dir(tmp_path: Path, monkeypatch) -> None:
    from ragd_train.config import workflow_dir

    monkeypatch.chdir(tmp_path)
    demo = load_config()["corpora"]["demo"]
    resolved = resolve_corpus(demo, [workflow_dir()])
    assert Path(resolved["path"]) == workflow_dir() / "data" / "demo"
    assert any(Path(resolved["path"]).glob("*.md"))


def test_chunk_overlap_error_names_the_file_and_line_that_set_it(tmp_path: Path) -> None:
    mine = write(tmp_path / "mine.yaml", "corpora:\n  demo:\n    chunk_size: 200\n    chunk_overlap: 300\n")
    with pytest.raises(InputError) as err:
        load_config([mine])
    assert (err.value.path, err.value.line, err.value.field) == (str(mine), 4, "corpora.demo.chunk_overlap")
    assert "300 must be smaller than chunk_size 200" in str(err.value)


# ---------------------------------------------------------------- deprecated names


def test_old_names_are_read_for_one_release_and_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragd_train import settings

    settings._REPORTED.clear()
    old = write(tmp_path / "old.yaml", "seed: 1\ntraining:\n  training_epochs: 2\n  embedding_max_steps: 7\n")
    config = load_config([old])
    assert config["llm"]["epochs"] == 2 and config["embeddings"]["max_steps"] == 7
    assert "training" not in config
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"ragd-train: {old}:3: training.training_epochs is deprecated, use llm.epochs "
        "(the old name is read until the next release)",
        f"ragd-train: {old}:4: training.embedding_max_steps is deprecated, use embeddings.max_steps "
        "(the old name is read until the next release)",
    ]
    load_config([old])
    assert capsys.readouterr().err == ""  # once per process


def test_a_setting_under_both_names_must_agree(tmp_path: Path) -> None:
    both = write(tmp_path / "both.yaml", "llm:\n  epochs: 1\ntraining:\n  training_epochs: 2\n")
    with pytest.raises(InputError) as info:
        load_config([both], quiet=True)
    assert (info.value.line, info.value.field) == (4, "training.training_epochs")
    assert "keep only llm.epochs" in str(info.value)
    same = write(tmp_path / "same.yaml", "llm:\n  epochs: 2\ntraining:\n  training_epochs: 2\n")
    assert load_config([same], quiet=True)["llm"]["epochs"] == 2


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("embeddings:\n  learning_rate: .nan\n", 2, "embeddings.learning_rate", "nan is not a finite number"),
        ("embeddings:\n  learning_rate: .inf\n", 2, "embeddings.learning_rate", "inf is not a finite number"),
        ("seed: 7\nreranker:\n  warmup_ratio: -.inf\n", 3, "reranker.warmup_ratio", "-inf is not a finite"),
        ("seed: 1.0e+23\n", 1, "seed", "greater than the maximum of 4294967295"),
        ("seed: -1\n", 1, "seed", "less than the minimum of 0"),
        ("seed: 4294967296\n", 1, "seed", "greater than the maximum of 4294967295"),
    ],
)
def test_non_finite_numbers_and_out_of_range_seeds_are_refused(
    tmp_path: Path, text: str, line: int, field: str, words: str
) -> None:
    """NaN passed the schema's bounds and inf trained NaN weights; a seed of 1e23 or -1 was a
    traceback in the trainer (#28 items 6 and 10)."""
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), line, field)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_flag_is_refused_before_anything_runs(tmp_path: Path, value: str) -> None:
    """`--learning-rate inf` exited 0 with "Model ready" and NaN weights (#28 item 6)."""
    from click.testing import CliRunner

    from ragd_train.cli import main

    data = write(tmp_path / "pairs.jsonl", '{"query": "q", "positive": "p"}\n')
    for args in (["--dry-run"], ["--data", str(data)]):
        result = CliRunner().invoke(
            main,
            ["train", "embeddings", "--learning-rate", value, "--workspace", str(tmp_path / "ws"), *args],
        )
        assert result.exit_code == 2, result.output
        assert f"--learning-rate: invalid value: {value} is not a finite number" in result.output
    assert not (tmp_path / "ws" / "models").exists()


def test_the_trainer_configs_refuse_non_finite_numbers() -> None:
    from ragd_train.embeddings.train import EmbeddingTrainingConfig
    from ragd_train.settings import bind

    with pytest.raises(InputError, match="embeddings.learning_rate.*finite number"):
        bind(EmbeddingTrainingConfig, {"embeddings": {"learning_rate": float("inf")}})


def test_a_corpus_name_longer_than_file_names_allow_is_refused(tmp_path: Path) -> None:
    """A corpus name becomes part of file names (models/.NAME-reranker.pid...@host.*.tmp)."""
    name = "c" + "".join(str(i) for i in range(60))
    bad = write(tmp_path / "bad.yaml", f"corpora:\n  {name}:\n    source: documents\n    path: .\n")
    with pytest.raises(InputError) as info:
        load_config([bad])
    assert (info.value.path, info.value.line, info.value.field) == (str(bad), 2, f"corpora.{name}")
    assert "is too long" in str(info.value)
    ok = write(tmp_path / "ok.yaml", f"corpora:\n  {name[:100]}:\n    source: documents\n    path: .\n")
    assert name[:100] in load_config([ok])["corpora"]

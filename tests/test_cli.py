"""The `ragd train` CLI: commands, the Snakemake command lines it builds, errors, and one real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import RECORD_KEYS

from ragd_train import runner
from ragd_train.cli import main
from ragd_train.config import deep_merge, workflow_dir
from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import read_jsonl
from ragd_train.snapshot import read_source

try:
    from tests.conftest import DEMO
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest import DEMO


def ragd(*args: str | Path) -> Any:
    return CliRunner().invoke(main, ["train", *map(str, args)], catch_exceptions=False)


class Captured(list):
    """Calls to ``run_targets``: (targets, workspace, kwargs)."""

    @property
    def only(self) -> tuple[list[str], Path, dict[str, Any]]:
        assert len(self) == 1, self
        return self[0]


@pytest.fixture
def targets(monkeypatch: pytest.MonkeyPatch) -> Captured:
    calls = Captured()
    monkeypatch.setattr(runner, "run_targets", lambda t, ws, **kw: calls.append((list(t), ws, kw)))
    return calls


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Captured:
    """The full snakemake command lines run_targets would start (nothing is started)."""
    calls = Captured()

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        calls.append((cmd, kwargs.get("cwd"), kwargs))
        return subprocess.CompletedProcess(cmd, 0)

    # Only workspace's view of the subprocess module changes; subprocess.run itself stays real.
    monkeypatch.setattr(runner, "subprocess", SimpleNamespace(run=fake_run))
    return calls


def option_values(cmd: list[str], name: str) -> list[str]:
    """The arguments after ``name`` up to the next option (or the ``--`` before the targets)."""
    if name not in cmd:
        return []
    values = []
    for arg in cmd[cmd.index(name) + 1 :]:
        if arg.startswith("-"):
            break
        values.append(arg)
    return values


def declared_overrides(cmd: list[str], user_files: list[Path]) -> dict[str, Any]:
    """The overrides the command line carries, as JSON ``--config`` values or as an extra config file."""
    known = {str(workflow_dir() / "config" / "config.yaml"), *map(str, user_files)}
    config: dict[str, Any] = {}
    for file in option_values(cmd, "--configfile"):
        if file not in known:
            config = deep_merge(config, yaml.safe_load(Path(file).read_text()))
    entries = (e.split("=", 1) for e in option_values(cmd, "--config"))
    return deep_merge(config, {k: json.loads(v) for k, v in entries})


def effective_config(cmd: list[str]) -> dict[str, Any]:
    """What Snakemake itself reads from the command line: --configfile files, then --config entries."""
    from snakemake.cli import parse_config  # heavy: only the test that needs it pays

    config: dict[str, Any] = {}
    for file in option_values(cmd, "--configfile"):
        config = deep_merge(config, yaml.safe_load(Path(file).read_text()))
    return deep_merge(config, parse_config(option_values(cmd, "--config")))


# ---------------------------------------------------------------- commands


def test_the_cli_imports_no_settings_models_until_a_command_needs_them() -> None:
    """``ragd train --help`` stays fast: pydantic and the settings models load only when a command
    with setting flags shows its help or runs."""
    heavy = "('pydantic', 'ragd_train.settings', 'torch')"
    code = f"import sys, ragd_train.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_commands_flags_and_their_help_come_from_the_settings() -> None:
    from ragd_train.settings import LlmSettings

    result = ragd("llm", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--epochs INTEGER RANGE Training epochs [config: 3]. [x>=1]" in text
    assert "--backend [auto|mlx|unsloth|peft]" in text
    assert LlmSettings.model_fields["epochs"].default == 3
    # the setting flags sit before the shared workflow options
    assert text.index("--answers") < text.index("--workspace")


def test_train_help_lists_the_commands() -> None:
    result = ragd("--help")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    expected = {
        "generate-data",
        "embeddings",
        "reranker",
        "llm",
        "evaluate",
        "list",
        "delete",
        "export",
        "fuse",
    }
    assert expected <= listed


# ---------------------------------------------------------------- snakemake command lines


def test_generate_data_command_line(tmp_path: Path, commands: Captured) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("seed: 1\n")
    ws = tmp_path / "ws"
    result = ragd(
        "generate-data",
        "--queries-per-chunk",
        "3",
        "--negatives",
        "4",
        "--generator",
        "nollm",
        "--cores",
        "3",
        "--configfile",
        extra,
        "--workspace",
        ws,
        "--dry-run",
        "--output",
        tmp_path / "out.json",
    )
    assert result.exit_code == 0, result.output
    cmd, cwd, kwargs = commands.only
    assert cmd[:3] == [sys.executable, "-m", "snakemake"]
    assert option_values(cmd, "--snakefile") == [str(workflow_dir() / "Snakefile")]
    assert option_values(cmd, "--directory") == [str(ws.resolve())] and Path(cwd) == ws.resolve()
    assert ws.is_dir()
    assert option_values(cmd, "--cores") == ["3"]
    assert "--dry-run" in cmd and "--profile" not in cmd and "--jobs" not in cmd
    configfiles = option_values(cmd, "--configfile")
    assert configfiles[:2] == [str(workflow_dir() / "config" / "config.yaml"), str(extra)]
    assert declared_overrides(cmd, [extra]) == {
        "generate": {"queries_per_chunk": 3, "hard_negatives_per_query": 4, "query_generator": "nollm"}
    }
    assert cmd[cmd.index("--") + 1 :] == ["training_data/demo/train.jsonl", "training_data/demo/test.jsonl"]
    assert kwargs["env"]["PYTHONUNBUFFERED"] == "1" and kwargs["check"] is False
    assert not (tmp_path / "out.json").exists()  # a dry run writes no output


def test_defaults_all_cores_no_config_no_dry_run(
    tmp_path: Path, commands: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGD_HOME", str(tmp_path / "home"))
    result = ragd("embeddings", "--dry-run")
    assert result.exit_code == 0, result.output
    cmd, cwd, _ = commands.only
    assert Path(cwd) == tmp_path / "home"  # $RAGD_HOME is the default workspace
    assert option_values(cmd, "--cores") == [str(os.cpu_count())]
    assert "--config" not in cmd
    assert cmd[-2:] == ["--", "models/demo-embeddings"]


def test_profile_and_jobs(tmp_path: Path, commands: Captured, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "workflow"
    (shipped / "profiles" / "slurm").mkdir(parents=True)
    monkeypatch.setenv("RAGD_TRAIN_WORKFLOW", str(shipped))
    ws = tmp_path / "ws"
    assert ragd("generate-data", "--profile", "slurm", "--workspace", ws, "-n").exit_code == 0
    assert ragd("generate-data", "--profile", tmp_path, "--jobs", "8", "--workspace", ws, "-n").exit_code == 0
    assert ragd("generate-data", "--jobs", "8", "--cores", "2", "--workspace", ws, "-n").exit_code == 0
    by_name, by_path, both = (cmd for cmd, _, _ in commands)
    assert option_values(by_name, "--profile") == [str(shipped / "profiles" / "slurm")]
    assert "--cores" not in by_name and "--jobs" not in by_name  # the profile decides
    assert option_values(by_name, "--snakefile") == [str(shipped / "Snakefile")]
    assert option_values(by_path, "--profile") == [str(tmp_path)]
    assert option_values(by_path, "--jobs") == ["8"] and "--cores" not in by_path
    assert option_values(both, "--jobs") == ["8"] and option_values(both, "--cores") == ["2"]


def test_generate_data_passes_overrides_to_run_targets(tmp_path: Path, targets: Captured) -> None:
    result = ragd("generate-data", "--negatives", "0", "--workspace", tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    names, ws, kwargs = targets.only
    assert names == ["training_data/demo/train.jsonl", "training_data/demo/test.jsonl"]
    assert ws == tmp_path.resolve()
    assert kwargs == {
        "configfiles": (),
        "overrides": {"generate": {"hard_negatives_per_query": 0}},
        "cores": None,
        "jobs": None,
        "profile": None,
        "dry_run": True,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queries-per-chunk", "0"], "--queries-per-chunk"),
        (["--queries-per-chunk", "21"], "--queries-per-chunk"),
        (["--negatives", "51"], "--negatives"),
        (["--generator", "gpt"], "--generator"),
        (["--configfile", "/no/such/file.yaml"], "--configfile"),
    ],
)
def test_generate_data_rejects_bad_flags(args: list[str], message: str, targets: Captured) -> None:
    result = ragd("generate-data", *args)
    assert result.exit_code == 2 and message in result.output
    assert targets == []


def test_embeddings_flags(tmp_path: Path, targets: Captured) -> None:
    base = tmp_path / "my-base"  # a local model directory: the pre-run check reads its dimension
    base.mkdir()
    (base / "config.json").write_text('{"hidden_size": 384}')
    result = ragd(
        "embeddings",
        "--base-model",
        str(base),
        "--epochs",
        "2",
        "--budget-minutes",
        "2.5",
        "--max-steps",
        "40",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-4",
        "--matryoshka-dims",
        "64,32",
        "--workspace",
        tmp_path,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    names, _, kwargs = targets.only
    assert names == ["models/demo-embeddings"]
    assert kwargs["overrides"] == {
        "embeddings": {
            "base_model": str(base),
            "epochs": 2,
            "budget_minutes": 2.5,
            "max_steps": 40,
            "batch_size": 8,
            "learning_rate": 1e-4,
            "matryoshka_dims": [64, 32],
        }
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-model", "no/such-model"], "--base-model: model 'no/such-model' not found"),
        (["--matryoshka-dims", "1024"], "--matryoshka-dims: [1024] exceed the embedding dimension 384"),
    ],
)
def test_a_dry_run_reports_what_the_real_run_would_refuse(
    args: list[str], message: str, tmp_path: Path, targets: Captured
) -> None:
    for dry in (["-n"], []):
        result = ragd("embeddings", *args, *dry, "--workspace", tmp_path)
        assert result.exit_code == 2 and message in result.output, result.output
    assert targets == [] and list(tmp_path.iterdir()) == []


def test_a_bad_base_model_in_a_config_file_names_its_line(tmp_path: Path, targets: Captured) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("seed: 3\nembeddings:\n  base_model: nope/typo\n")
    result = ragd("embeddings", "--configfile", mine, "-n", "--workspace", tmp_path)
    assert result.exit_code == 1 and f"{mine}:3: field 'embeddings.base_model'" in result.output
    assert targets == []


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("none", "none"), ("128", [128])])
def test_matryoshka_dims_keywords(value: str, parsed: Any, tmp_path: Path, targets: Captured) -> None:
    assert ragd("embeddings", "--matryoshka-dims", value, "--workspace", tmp_path, "-n").exit_code == 0
    assert targets.only[2]["overrides"] == {"embeddings": {"matryoshka_dims": parsed}}


@pytest.mark.parametrize("value", ["abc", "64,x", "64,,32"])
def test_matryoshka_dims_rejected(value: str, targets: Captured) -> None:
    result = ragd("embeddings", "--matryoshka-dims", value)
    assert result.exit_code == 2
    assert "--matryoshka-dims" in result.output and "comma-separated integers" in result.output
    assert "Traceback" not in result.output
    assert targets == []


def test_embeddings_prints_the_ragd_hint_and_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(names: list[str], ws: Path, **kwargs: Any) -> None:
        model = ws / names[0]
        model.mkdir(parents=True)
        (model / "training_metadata.json").write_text(json.dumps({"output_dimension": 64}))
        (model / "modules.json").write_text("[]")

    monkeypatch.setattr(runner, "run_targets", fake_run)
    monkeypatch.setenv("HOME", str(tmp_path))  # ragd's config: absent, so ragd's defaults (384)
    out = tmp_path / "exported"
    result = ragd("embeddings", "--workspace", tmp_path / "ws", "--output", out)
    assert result.exit_code == 0, result.output
    assert (out / "training_metadata.json").is_file()
    assert f"Model ready: {out}" in result.output
    # 64 != ragd's 384: the config is written with the dimension and the old index moved aside
    assert f"ragd-train use {out.resolve()}" in result.output
    assert f"mv {tmp_path}/.ragd/chroma {tmp_path}/.ragd/chroma.dim384" in result.output
    demo = (workflow_dir() / "data" / "demo").resolve()
    assert f"ragd index {demo} --overwrite" in result.output


def test_source_and_path_declare_a_corpus(
    tmp_path: Path, targets: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    result = ragd("generate-data", "--corpus", "mine", "--source", "documents", "--path", "docs", "-n")
    assert result.exit_code == 0, result.output
    names, _, kwargs = targets.only
    assert names == ["training_data/mine/train.jsonl", "training_data/mine/test.jsonl"]
    assert kwargs["overrides"] == {
        "corpora": {"mine": {"source": "documents", "path": str(tmp_path / "docs")}}  # made absolute
    }
    (tmp_path / "c.jsonl").touch()  # a corpus path that does not exist is refused (#28)
    ragd("embeddings", "--corpus", "mine", "--source", "jsonl", "--path", "c.jsonl", "--epochs", "1", "-n")
    assert targets[1][0] == ["models/mine-embeddings"]
    assert targets[1][2]["overrides"] == {
        "corpora": {"mine": {"source": "jsonl", "path": str(tmp_path / "c.jsonl")}},
        "embeddings": {"epochs": 1},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "documents"], "--source and --path go together"),
        (["--path", "docs"], "--source and --path go together"),
        (["--source", "chroma", "--path", "docs"], "'chroma' is not one of"),
    ],
)
def test_source_and_path_go_together(args: list[str], message: str, targets: Captured) -> None:
    result = ragd("generate-data", "--corpus", "mine", *args)
    assert result.exit_code == 2 and message in result.output
    assert targets == []


# ---------------------------------------------------------------- errors


def test_errors_are_one_line_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise RagdTrainError("snakemake failed (exit 1) building x; see the rule logs under /ws/logs")

    monkeypatch.setattr(runner, "run_targets", failing)
    result = ragd("generate-data", "--workspace", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == "Error: snakemake failed (exit 1) building x; see the rule logs under /ws/logs\n"
    assert "Traceback" not in result.output


def test_snakemake_failure_becomes_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(run=lambda cmd, **kw: subprocess.CompletedProcess(cmd, 3))
    monkeypatch.setattr(runner, "subprocess", fake)
    result = ragd("embeddings", "--workspace", tmp_path)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: snakemake failed (exit 3) building models/demo-embeddings")
    assert str(tmp_path.resolve() / "logs") in line


def test_snapshot_command_and_config_errors(
    tmp_path: Path, demo_subset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the command changes into the workspace; restore afterwards
    ws = tmp_path / "ws"
    args = ["snapshot", "--corpus", "mine", "--source", "documents", "--path", demo_subset, "--workspace", ws]
    first = ragd(*args)
    assert first.exit_code == 0, first.output
    assert first.output == f"{ws / 'snapshots' / 'mine.jsonl'}: updated\n"
    chunks = read_source("documents", {"path": str(demo_subset)})
    assert read_jsonl(ws / "snapshots" / "mine.jsonl") == chunks
    assert ragd(*args).output.endswith(": unchanged\n")

    bad = tmp_path / "bad.yaml"
    bad.write_text("embeddings:\n  epochs: 0\n")
    result = ragd("snapshot", "--configfile", bad, "--workspace", ws)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {bad}:2: field 'embeddings.epochs': invalid config value: 0 is less than the minimum of 1\n"
    )
    unknown = ragd("snapshot", "--corpus", "nope", "--workspace", ws)
    assert unknown.exit_code == 1
    assert unknown.stderr == "Error: unknown corpus 'nope' (known: demo)\n"


# ---------------------------------------------------------------- what Snakemake receives


def test_numeric_flags_survive_snakemake(
    tmp_path: Path, demo_subset: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    corpus = ["--corpus", "mine", "--source", "documents", "--path", demo_subset]
    result = ragd(
        "generate-data",
        *corpus,
        "--queries-per-chunk",
        "3",
        "--negatives",
        "4",
        "--workspace",
        tmp_path,
        "-n",
    )
    assert result.exit_code == 0, capfd.readouterr().out


def test_flag_values_keep_their_types_on_the_command_line(tmp_path: Path, commands: Captured) -> None:
    ragd("generate-data", "--queries-per-chunk", "3", "--negatives", "4", "--workspace", tmp_path / "a", "-n")
    generate = commands.only[0]
    ragd("embeddings", "--epochs", "2", "--matryoshka-dims", "64,32", "--workspace", tmp_path / "b", "-n")
    embed = commands[1][0]
    assert effective_config(generate)["generate"]["queries_per_chunk"] == 3
    assert effective_config(generate)["generate"]["hard_negatives_per_query"] == 4
    assert effective_config(embed)["embeddings"]["epochs"] == 2
    assert effective_config(embed)["embeddings"]["matryoshka_dims"] == [64, 32]


def test_dry_run_without_configfile_in_a_bare_workspace(
    tmp_path: Path, demo_subset: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Regression: the Snakefile's own configfile must not be looked up in the workspace.
    args = ["--corpus", "mine", "--source", "documents", "--path", demo_subset]
    result = ragd("generate-data", *args, "--workspace", tmp_path / "ws", "--dry-run")
    out = capfd.readouterr()
    assert result.exit_code == 0, out.err
    assert "training_data/mine/train.jsonl" in out.out + out.err
    assert not (tmp_path / "ws" / "training_data").exists()  # a dry run builds nothing


# ---------------------------------------------------------------- one real run


@pytest.mark.slow
def test_generate_data_end_to_end_then_nothing_to_do(
    tmp_path: Path, tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    config = tmp_path / "test.yaml"
    settings = {
        "corpora": {"demo": {"limit": 6}},  # the shipped demo, found relative to the workflow
        "mining": {"model": str(tiny_model)},
        "generate": {"query_generator": "nollm"},  # never probe a real local Ollama
    }
    config.write_text(yaml.safe_dump(settings))
    output = tmp_path / "training_data.json"
    args = [
        "generate-data",
        "--corpus",
        "demo",
        "--workspace",
        ws,
        "--output",
        output,
        "--configfile",
        config,
    ]

    first = ragd(*args, "--cores", "2")
    assert first.exit_code == 0, first.output + capfd.readouterr().err
    assert f"Training data written to {output}" in first.output
    records = json.loads(output.read_text())
    assert isinstance(records, list) and records
    train = ws / "training_data" / "demo" / "train.jsonl"
    assert records == read_jsonl(train)
    assert all(set(r) == RECORD_KEYS for r in records)
    assert {r["source_document"] for r in records} <= {p.stem for p in sorted(DEMO.glob("*.md"))[:6]}
    test = read_jsonl(ws / "training_data" / "demo" / "test.jsonl")
    assert test and not {r["source_document"] for r in records} & {r["source_document"] for r in test}
    stats = json.loads((ws / "training_data" / "demo" / "stats.json").read_text())
    assert stats["split"]["train"] == len(records) and stats["generation"]["generator"] == "nollm"
    manifest = json.loads((ws / "snapshots" / "demo.manifest.json").read_text())
    assert manifest["source_path"] == str(DEMO.resolve()) and manifest["n_documents"] == 6
    assert (ws / "logs" / "build_training_data" / "demo.log").is_file()
    capfd.readouterr()

    mtime = train.stat().st_mtime_ns
    second = ragd(*args, "--cores", "2")
    assert second.exit_code == 0, second.output
    captured = capfd.readouterr()
    assert "Nothing to be done" in captured.out + captured.err
    assert train.stat().st_mtime_ns == mtime
    assert json.loads(output.read_text()) == records


def test_llm_flags(tmp_path: Path, targets: Captured) -> None:
    result = ragd(
        "llm",
        "--backend",
        "mlx",
        "--base-model",
        "smollm2:135m",
        "--epochs",
        "2",
        "--rank",
        "8",
        "--alpha",
        "16",
        "--learning-rate",
        "1e-4",
        "--distractors",
        "2",
        "--oracle-fraction",
        "0.6",
        "--answers",
        "extractive",
        "--workspace",
        tmp_path,
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    names, _, kwargs = targets.only
    assert names == ["models/demo-llm"]
    assert kwargs["overrides"] == {
        "llm": {
            "backend": "mlx",
            "base_model": "smollm2:135m",
            "epochs": 2,
            "lora_rank": 8,
            "lora_alpha": 16,
            "learning_rate": 1e-4,
        },
        "raft": {"distractors": 2, "oracle_fraction": 0.6, "answers": "extractive"},
    }
    assert ragd("llm", "--backend", "tpu").exit_code == 2


@pytest.mark.parametrize(
    ("name", "report", "improved", "says"),
    [
        (
            "demo-reranker",
            {"candidates": 50, "verdict": "does not improve"},
            False,
            "does NOT improve retrieval: NDCG@10 0.5000 -> 0.4000",
        ),
        ("demo-reranker", {"candidates": 50, "verdict": "improves"}, True, "improves retrieval"),
        ("demo-llm", {"examples": 3, "improved": False}, False, "NOT better than its base on 3 RAFT test"),
    ],
)
def test_evaluate_maps_rerankers_and_adapters_onto_their_reports(
    name: str, report: dict, improved: bool, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = {"base": 0.5, "finetuned": 0.4, "delta": -0.1, "ci_low": -0.2, "ci_high": 0.0, "p_value": 0.04}
    f1 = {"base": 0.5, "adapter": 0.4, "delta": -0.1, "ci95": [-0.2, 0.0], "p_value": 0.04}
    from ragd_train.evaluate.llm import llm_message
    from ragd_train.evaluate.report import conclude
    from ragd_train.evaluate.reranker import reranker_message

    headline = {"metric": "ndcg@10", **numbers, "retriever": "finetuned"}
    body = {**report, "headline": headline, "metrics": {"f1": f1}}
    kind = name.rsplit("-", 1)[1]
    body = conclude(body, kind, improved, (reranker_message if kind == "reranker" else llm_message)(body))
    built: list[str] = []

    def fake_run(names: list[str], ws: Path, **kwargs: Any) -> None:
        built.extend(names)
        (ws / "reports").mkdir(parents=True)
        (ws / names[0]).write_text(json.dumps(body))

    monkeypatch.setattr(runner, "run_targets", fake_run)
    result = ragd("evaluate", "--model", name, "--workspace", tmp_path / "ws")
    assert built == [f"reports/{name}.json"]
    assert result.exit_code == (0 if improved else 1), result.output
    assert says in result.output
    refused = ragd("evaluate", "--model", name, "--test-data", __file__, "--workspace", tmp_path / "ws")
    assert refused.exit_code == 1 and "apply to embedding models" in refused.output


def test_a_bad_flag_value_is_reported_against_the_flag(tmp_path: Path, targets: Captured) -> None:
    result = ragd("embeddings", "--learning-rate", "-1", "--workspace", tmp_path, "-n")
    assert result.exit_code == 2, result.output
    # the bound is the setting's own declaration (embeddings.learning_rate > 0), checked by click
    assert "'--learning-rate': -1.0 is not in the range x>0" in result.output
    assert "overrides-" not in result.output
    assert not targets, "nothing ran"


def test_output_onto_an_existing_directory_is_refused_before_the_build(
    tmp_path: Path, targets: Captured
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    result = ragd("embeddings", "--output", taken, "--workspace", tmp_path / "ws")
    assert result.exit_code == 2 and "already exists" in result.output and "--output" in result.output
    assert not targets and (taken / "mine.txt").read_text() == "keep me"


def test_a_yaml_syntax_error_names_its_file_and_line(tmp_path: Path, targets: Captured) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("generate:\n  queries_per_chunk: [1,\n")
    result = ragd("generate-data", "--configfile", bad, "--workspace", tmp_path / "ws")
    assert result.exit_code == 1 and f"{bad}:3: invalid YAML" in result.output, result.output
    assert not targets


# ---------------------------------------------------------------- #28 item 11: names and config files


@pytest.mark.parametrize(
    "args",
    [
        ["generate-data", "--corpus", "nope"],
        ["embeddings", "--corpus", "nope"],
        ["reranker", "--corpus", "nope"],
        ["llm", "--corpus", "nope"],
        ["evaluate", "--model", "nope-embeddings"],
    ],
)
def test_an_unknown_corpus_lists_the_known_ones_before_snakemake_runs(
    tmp_path: Path, targets: Captured, args: list[str]
) -> None:
    """It was Snakemake's "No rule to produce training_data/nope/train.jsonl"."""
    result = CliRunner().invoke(main, ["train", *args, "--workspace", str(tmp_path), "-n"])
    assert result.exit_code == 1 and result.output == "Error: unknown corpus 'nope' (known: demo)\n"
    assert targets == []


def test_an_empty_configfile_is_named_as_such(tmp_path: Path, targets: Captured) -> None:
    empty = tmp_path / "mine.yaml"
    empty.write_text("# nothing yet\n")
    result = CliRunner().invoke(main, ["train", "generate-data", "--configfile", str(empty), "-n"])
    assert result.exit_code == 1
    assert result.output == f"Error: {empty}: config file is empty (it must hold a mapping of settings)\n"
    assert targets == []


def test_a_configfile_that_is_a_pipe_is_read_once_and_kept_for_snakemake(
    tmp_path: Path, targets: Captured
) -> None:
    """`--configfile <(...)`: the check read the pipe, and Snakemake then found it empty."""
    import os

    read, write = os.pipe()
    os.write(write, b"generate:\n  queries_per_chunk: 3\n")
    os.close(write)
    try:
        args = ["train", "generate-data", "--configfile", f"/dev/fd/{read}", "--workspace", str(tmp_path)]
        result = CliRunner().invoke(main, [*args, "-n"])
    finally:
        os.close(read)
    assert result.exit_code == 0, result.output
    (kept,) = targets.only[2]["configfiles"]
    assert Path(kept).parent == tmp_path.resolve() / ".ragd-train"
    assert yaml.safe_load(Path(kept).read_text()) == {"generate": {"queries_per_chunk": 3}}


def test_a_bad_llm_base_url_in_ragds_config_is_reported_as_ragds_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was reported against ollama.host, a setting the user never wrote."""
    from ragd_train.config import load_config
    from ragd_train.errors import InputError

    monkeypatch.setenv("HOME", str(tmp_path))
    ragd_config = tmp_path / ".ragd" / "config.yaml"
    ragd_config.parent.mkdir()
    ragd_config.write_text("llm:\n  model: llama3.2:3b\n  base_url: localhost 11434\n")
    with pytest.raises(InputError) as info:
        load_config()
    assert (info.value.path, info.value.line, info.value.field) == (str(ragd_config), 3, "llm.base_url")
    assert "not an http(s) URL: 'localhost 11434'" in str(info.value)
    ragd_config.write_text("llm:\n  base_url: http://gpu-box:11434\n")
    assert load_config()["ollama"]["host"] == "http://gpu-box:11434"


# ---------------------------------------------------------------- #28 item 10: one line, not a traceback


def test_a_corpus_path_that_is_a_symlink_loop_is_one_line(tmp_path: Path, targets: Captured) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"corpora:\n  x:\n    source: documents\n    path: {loop}\n")
    ws = ["--workspace", str(tmp_path / "ws")]
    runner = CliRunner()
    for args, expected in [
        (
            ["generate-data", "--corpus", "x", "--source", "documents", "--path", str(loop), "-n"],
            f"Error: {loop}: field '--path': is a symlink loop\n",
        ),
        (
            ["generate-data", "--corpus", "x", "--configfile", str(cfg), "-n"],
            f"Error: corpus 'x': {loop}: field 'path': is a symlink loop\n",
        ),
        (
            ["snapshot", "--corpus", "x", "--configfile", str(cfg)],
            f"Error: {loop}: field 'path': is a symlink loop\n",
        ),
    ]:
        result = runner.invoke(main, ["train", *args, *ws])
        assert result.exit_code == 1 and result.output == expected, result.output
    assert targets == []


def test_ragd_home_that_is_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, targets: Captured
) -> None:
    home = tmp_path / "ragd-home"
    home.write_text("not a folder")
    monkeypatch.setenv("RAGD_HOME", str(home))
    for args in (["list"], ["generate-data", "-n"], ["cache", "stats"], ["unlock"]):
        result = CliRunner().invoke(main, ["train", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.output == f"Error: the workspace {home} ($RAGD_HOME) is not a folder\n", result.output
    assert home.read_text() == "not a folder"


def test_a_file_system_error_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only workspace (or ~/.ragd) made tracebacks: delete, use, training with --data.
    (Injected: the tests run as root, for whom chmod does not make a folder read-only.)"""
    import errno
    import shutil

    model = tmp_path / "ws" / "models" / "m"
    model.mkdir(parents=True)

    def read_only(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", read_only)
    result = CliRunner().invoke(main, ["train", "delete", "m", "-y", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1 and result.output == f"Error: {model}: Permission denied\n"
    assert model.is_dir()


def test_an_empty_ragd_home_is_unset_and_cores_and_jobs_are_positive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, targets: Captured
) -> None:
    """An empty $RAGD_HOME made the current directory the workspace; --cores 0 silently meant all
    cores, --cores -1 reached Snakemake (found trying bad inputs for #28)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAGD_HOME", "")
    monkeypatch.chdir(tmp_path)
    assert runner.ragd_home() == tmp_path / ".ragd"
    for flag in ("--cores", "--jobs"):
        for value in ("0", "-1"):
            result = CliRunner().invoke(main, ["train", "generate-data", flag, value, "-n"])
            assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output
    assert targets == []


def test_a_corpus_path_that_does_not_exist_is_refused_before_snakemake_runs(
    tmp_path: Path, targets: Captured
) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"corpora:\n  demo:\n    source: documents\n    path: {tmp_path / 'gone'}\n")
    result = CliRunner().invoke(main, ["train", "generate-data", "--configfile", str(cfg), "-n"])
    assert result.exit_code == 1
    assert result.output == f"Error: corpus 'demo': {tmp_path / 'gone'}: field 'path': path does not exist\n"
    assert targets == []

"""Embedding training on a tiny local model: trainer, Matryoshka validation, metadata, ragd protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragd_train.embeddings.train import (
    EmbeddingTrainingConfig,
    load_training_examples,
    matryoshka_dims,
    read_training_records,
    train_embeddings,
)
from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import write_jsonl
from ragd_train.ragd.embedder import FineTunedEmbedder
from ragd_train.ragd.hints import ragd_config_hint

PAIRS = [
    (
        "how do I rotate the master key",
        "Key rotation: run nimbus key rotate to re-wrap the master key.",
        "d1",
    ),
    ("what port does the API use", "The API and web interface listen on port 8443 over TLS.", "d2"),
    (
        "how long are backups kept",
        "Backups are retained for 30 days unless a retention policy says otherwise.",
        "d3",
    ),
    (
        "enable two factor login",
        "MFA: users enrol a TOTP app or a WebAuthn key from their profile page.",
        "d4",
    ),
    (
        "limit requests per minute",
        "Rate limits: each token may send 600 requests per minute before NV-4290.",
        "d5",
    ),
    ("where are logs written", "Logs go to /var/log/nimbus/ and rotate daily at midnight.", "d6"),
]


def _records(with_negatives: bool = True) -> list[dict]:
    records = []
    for i, (query, positive, doc) in enumerate(PAIRS):
        other = PAIRS[(i + 1) % len(PAIRS)]
        rec = {"query": query, "positive": positive, "source_document": doc}
        if with_negatives:
            rec["negatives"] = [{"id": f"{other[2]}_chunk_0", "text": other[1]}]
        records.append(rec)
    return records


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, _records())
    return path


def test_matryoshka_dims_follow_model_and_reject_too_big() -> None:
    assert matryoshka_dims("auto", 384) == [384, 192, 96, 48]
    assert matryoshka_dims("auto", 32) == [32]
    assert matryoshka_dims("none", 384) == []
    assert matryoshka_dims([64, 128], 384) == [384, 128, 64]
    with pytest.raises(InputError, match=r"embeddings\.matryoshka_dims.*\[512\] exceed.*384"):
        matryoshka_dims([512, 64], 384)


def test_training_examples_have_uniform_columns(tmp_path: Path) -> None:
    records = _records()
    records[0]["negatives"] = []  # topped up from other documents
    path = tmp_path / "t.jsonl"
    write_jsonl(path, records)
    rows = load_training_examples(path, hard_negatives=2, seed=1)
    assert all(set(r) == {"anchor", "positive", "negative_1", "negative_2"} for r in rows)
    assert rows[0]["negative_1"] != rows[0]["positive"]
    json_path = tmp_path / "t.json"  # a user's own JSON array works too
    json_path.write_text(json.dumps(_records(with_negatives=False)))
    assert [r["anchor"] for r in load_training_examples(json_path, 0, 1)] == [p[0] for p in PAIRS]


def test_training_examples_bad_input_names_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": "c"}\n')
    with pytest.raises(InputError) as err:
        load_training_examples(path, 1, 1)
    assert str(err.value) == f"{path}:2: field 'positive': missing required field"


def test_train_tiny_model_writes_complete_directory(
    tiny_model: Path, train_file: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "models" / "tiny-embeddings"
    cfg = EmbeddingTrainingConfig(
        base_model=str(tiny_model),
        epochs=2,
        batch_size=4,
        learning_rate=1e-3,
        matryoshka_dims=[16],
        seed=7,
        max_seq_length=24,  # trained on short texts ...
    )
    before = SentenceTransformer(str(tiny_model)).encode(["what port does the API use"])
    meta = train_embeddings(train_file, out, cfg)
    for name in ("model.safetensors", "config.json", "modules.json", "tokenizer.json", "README.md"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin")), "weights must be safetensors only"
    assert not list(out.parent.glob(".*.tmp")), "staging directory left behind"
    stored = json.loads((out / "training_metadata.json").read_text())
    assert stored["output_dimension"] == 32 and stored["matryoshka_dims"] == [32, 16]
    assert stored["inputs"]["training_data"]["sha256"] == meta["inputs"]["training_data"]["sha256"]
    assert stored["config"]["learning_rate"] == 1e-3 and stored["seed"] == 7
    assert {"torch", "sentence-transformers", "transformers"} <= set(stored["versions"])
    assert len(stored["loss_history"]) == 4 and stored["peak_memory_mb"] > 0
    on_gpu = stored["device"].startswith("cuda")
    assert (stored["gpu_peak_memory_mb"] or 0) > 0 if on_gpu else stored["gpu_peak_memory_mb"] is None
    tuned = SentenceTransformer(str(out))
    assert tuned.max_seq_length == stored["max_seq_length"] == 128, "... it still reads whole chunks"
    after = tuned.encode(["what port does the API use"])
    assert not np.allclose(before, after), "training did not change the weights"
    with pytest.raises(RagdTrainError, match="already exists"):
        train_embeddings(train_file, out, cfg)


def test_failed_training_leaves_nothing(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    out = tmp_path / "models" / "x-embeddings"
    with pytest.raises(InputError, match="no training records"):
        train_embeddings(bad, out, EmbeddingTrainingConfig(base_model=str(tiny_model)))
    with pytest.raises(InputError, match="exceed"):
        good = tmp_path / "t.jsonl"
        write_jsonl(good, _records())
        train_embeddings(good, out, EmbeddingTrainingConfig(base_model=str(tiny_model), matryoshka_dims=[64]))
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_finetuned_embedder_satisfies_ragd_protocol(tiny_model: Path) -> None:
    embedder = FineTunedEmbedder(tiny_model)
    vectors = embedder.embed(["one text", "another text"])
    assert isinstance(vectors, list) and len(vectors) == 2
    assert all(isinstance(v, list) and len(v) == embedder.dimension == 32 for v in vectors)
    assert all(isinstance(x, float) for x in vectors[0])
    assert embedder.embed([]) == []
    assert embedder.model_name == f"finetuned:{tiny_model.resolve()}"
    with pytest.raises(FileNotFoundError):
        FineTunedEmbedder(tiny_model.parent)


def test_ragd_hint_names_the_config_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    """Same dimension as ragd's: ragd's own `models set`, then `index --overwrite` re-embeds."""
    hint = ragd_config_hint(tmp_path, 384, ["/docs/legal"])
    assert f"ragd models set --embedding {tmp_path.resolve()} --no-validate" in hint
    assert "ragd index /docs/legal --overwrite" in hint and "reindex" not in hint


def test_cli_trains_on_a_users_own_file(tiny_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ragd_train.cli import main

    data = tmp_path / "my_pairs.json"  # a JSON array, as `ragd train generate-data --output x.json` writes
    data.write_text(json.dumps(_records()))
    ws = tmp_path / "ws"
    args = [
        "train",
        "embeddings",
        "--data",
        str(data),
        "--workspace",
        str(ws),
        "--base-model",
        str(tiny_model),
    ]
    result = CliRunner().invoke(main, [*args, "--epochs", "1", "--matryoshka-dims", "none"])
    assert result.exit_code == 0, result.output
    out = ws / "models" / "my_pairs-embeddings"
    meta = json.loads((out / "training_metadata.json").read_text())
    assert (
        meta["config"]["epochs"] == 1
        and meta["matryoshka_dims"] == []
        and meta["base_model"] == str(tiny_model)
    )
    # dimension 32, not ragd's 384: written through `ragd-train use`, the old index moved aside
    assert f"Model ready: {out}" in result.output and f"ragd-train use {out.resolve()}" in result.output
    again = CliRunner().invoke(main, [*args, "--epochs", "1"])
    assert again.exit_code == 1 and "already exists; delete it first" in again.output


def _teacher_records() -> list[dict]:
    records = _records()
    for i, record in enumerate(records):
        a, b = PAIRS[(i + 2) % len(PAIRS)], PAIRS[(i + 3) % len(PAIRS)]
        record["teacher_pair"] = {"first": {"text": a[1]}, "second": {"text": b[1]}, "margin": 0.05 * (i - 2)}
    return records


def test_teacher_pairs_become_margin_mse_rows(tmp_path: Path) -> None:
    from ragd_train.embeddings.train import loss_name, teacher_kind, teacher_rows

    records = _teacher_records()
    rows = teacher_rows(records, tmp_path / "t.jsonl")
    assert rows[0] == {"anchor": PAIRS[0][0], "first": PAIRS[2][1], "second": PAIRS[3][1], "label": -0.1}
    assert teacher_kind(records) == "pairs" and teacher_kind(_records()) is None
    assert loss_name("auto", "cpu", teacher="pairs") == "margin_mse"
    assert loss_name("auto", "cpu", teacher=None) == "cached_mnrl"
    assert loss_name("mnrl", "cpu", teacher="pairs") == "mnrl"


def test_margin_mse_on_cpu_accumulates_mini_batches_of_the_same_update() -> None:
    from ragd_train.embeddings.train import memory_bounded_batch

    assert memory_bounded_batch("margin_mse", "cpu", 32, 16) == (8, 4)
    assert memory_bounded_batch("margin_mse", "cpu", 20, 16) == (5, 4)
    assert memory_bounded_batch("margin_mse", "cpu", 8, 16) == (8, 1)
    assert memory_bounded_batch("margin_mse", "cpu", 7, 4) == (1, 7)
    assert memory_bounded_batch("margin_mse", "cuda:0", 32, 16) == (32, 1)
    assert memory_bounded_batch("cached_mnrl", "cpu", 32, 16) == (32, 1)  # GradCache bounds it already
    # longer texts, smaller mini-batches: 256 tokens halve them, 512 quarter them
    assert memory_bounded_batch("margin_mse", "cpu", 32, 16, max_seq_length=256) == (4, 8)
    assert memory_bounded_batch("margin_mse", "cpu", 32, 16, max_seq_length=512) == (2, 16)
    assert memory_bounded_batch("margin_mse", "cpu", 32, 16, max_seq_length=64) == (16, 2)


def test_bad_teacher_pair_names_file_line_field(tmp_path: Path) -> None:
    from ragd_train.embeddings.train import teacher_rows

    records = _teacher_records()
    records[2]["teacher_pair"]["margin"] = "high"
    with pytest.raises(InputError, match=r"t\.jsonl:3: field .teacher_pair\.margin."):
        teacher_rows(records, tmp_path / "t.jsonl")
    del records[2]["teacher_pair"]["second"]
    with pytest.raises(InputError, match=r":3: field .teacher_pair\.second."):
        teacher_rows(records, tmp_path / "t.jsonl")


@pytest.mark.parametrize("labels, loss", [("pairs", "margin_mse"), ("lists", "distill_kl")])
def test_auto_loss_distills_the_teacher_labels(
    tiny_model: Path, tmp_path: Path, labels: str, loss: str
) -> None:
    from sentence_transformers import SentenceTransformer

    data = tmp_path / "train.jsonl"
    write_jsonl(data, _teacher_records() if labels == "pairs" else _teacher_list_records())
    out = tmp_path / "distilled"
    cfg = EmbeddingTrainingConfig(base_model=str(tiny_model), epochs=2, batch_size=3, learning_rate=1e-3)
    meta = train_embeddings(data, out, cfg)
    assert meta["loss"] == loss and len(meta["loss_history"]) == 4
    assert meta["matryoshka_dims"] == [], "matryoshka_dims: auto is off for distillation"
    assert all(math.isfinite(h["loss"]) for h in meta["loss_history"])
    before = SentenceTransformer(str(tiny_model)).encode([PAIRS[0][0]])
    after = SentenceTransformer(str(out)).encode([PAIRS[0][0]])
    assert not np.allclose(before, after), "the weights did not move"


def _teacher_list_records(size: int = 3) -> list[dict]:
    records = _records()
    for i, record in enumerate(records):
        cands = [PAIRS[(i + k) % len(PAIRS)][1] for k in range(2, 2 + size)]
        record["teacher_list"] = {
            "candidates": [
                {"text": t, "score": round(0.6 - 0.1 * k + 0.01 * i, 4)} for k, t in enumerate(cands)
            ]
        }
    return records


def test_teacher_lists_become_distill_kl_rows(tmp_path: Path) -> None:
    from ragd_train.embeddings.train import loss_name, teacher_kind, teacher_list_rows

    records = _teacher_list_records()
    rows = teacher_list_rows(records, tmp_path / "t.jsonl")
    assert rows[0] == {
        "anchor": PAIRS[0][0],
        "candidate_1": PAIRS[2][1],
        "candidate_2": PAIRS[3][1],
        "candidate_3": PAIRS[4 % len(PAIRS)][1],
        "label": [0.6, 0.5, 0.4],
    }
    assert teacher_kind(records) == "lists"
    assert loss_name("auto", "cpu", teacher="lists") == "distill_kl"
    records[1]["teacher_list"]["candidates"].pop()
    with pytest.raises(
        InputError, match=r"t\.jsonl:2: field .teacher_list\.candidates.*earlier records have 3"
    ):
        teacher_list_rows(records, tmp_path / "t.jsonl")
    records = _teacher_list_records()
    records[3]["teacher_list"]["candidates"][1]["score"] = None
    with pytest.raises(InputError, match=r":4: field .teacher_list\.candidates\[1\]\.score."):
        teacher_list_rows(records, tmp_path / "t.jsonl")
    del records[0]["teacher_list"]
    with pytest.raises(InputError, match=r":1: field .teacher_list."):
        teacher_list_rows(records, tmp_path / "t.jsonl")


def test_listwise_rows_take_smaller_mini_batches() -> None:
    from ragd_train.embeddings.train import memory_bounded_batch

    # a row of query + 8 candidates holds three times the texts of a MarginMSE row
    assert memory_bounded_batch("distill_kl", "cpu", 32, 16, 128, texts_per_example=9) == (2, 16)
    assert memory_bounded_batch("distill_kl", "cpu", 32, 16, 128, texts_per_example=3) == (8, 4)
    assert memory_bounded_batch("distill_kl", "cuda:0", 32, 16, 128, texts_per_example=9) == (32, 1)


def test_pickle_only_weights_are_refused_with_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """A model directory whose weights are only a pickle is never loaded (loading one runs code)."""
    import shutil

    from ragd_train.errors import RagdTrainError
    from ragd_train.hub import resolve_model
    from ragd_train.ragd.embedder import FineTunedEmbedder

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    for weights in pickled.rglob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in pickled.rglob("*"))
    for load in (resolve_model, FineTunedEmbedder):
        with pytest.raises(RagdTrainError, match=r"pytorch_model.bin: pickle weights are refused") as err:
            load(str(pickled))
        assert "\n" not in str(err.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in pickled.rglob("*")) == before
    assert Path(resolve_model(str(tiny_model))) == tiny_model.resolve()  # safetensors still load


@pytest.mark.parametrize(
    ("bad", "field", "kind"),
    [
        ('{"query": 12345, "positive": "p"}', "query", "int"),
        ('{"query": "q", "positive": {"a": 1}}', "positive", "dict"),
    ],
    ids=["int", "dict"],
)
def test_training_data_of_the_wrong_type_is_refused_at_its_line(
    tmp_path: Path, bad: str, field: str, kind: str
) -> None:
    """Wrong types name the file, the real line (blank lines counted) and the field."""
    from ragd_train.embeddings.train import read_training_records
    from ragd_train.errors import InputError

    good = '{"query": "q", "positive": "p"}'
    data = tmp_path / "mine.jsonl"
    data.write_text(f"{good}\n\n\n{good}\n\n\n{bad}\n")
    with pytest.raises(InputError, match=rf"mine.jsonl:7: field '{field}': expected a string, got {kind}"):
        read_training_records(data)


def test_budget_cuts_the_steps_to_what_fits_and_max_steps_overrides() -> None:
    from ragd_train.training import TrainingBudget, plan_steps

    cut = plan_steps(TrainingBudget(2, 1, None, "embeddings."), steps_per_epoch=100, step_time=2.0)
    assert (cut["steps"], cut["full_steps"]) == (30, 200)
    assert cut["limited_by"] == "embeddings.budget_minutes" and cut["estimate_s"] == 60.0
    fits = plan_steps(TrainingBudget(2, 1, None, "reranker."), steps_per_epoch=10, step_time=2.0)
    assert (fits["steps"], fits["limited_by"]) == (20, "reranker.epochs")
    assert plan_steps(TrainingBudget(1, 0, None, "x."), 100, None)["steps"] == 100
    fixed = plan_steps(TrainingBudget(1, 1, 7, "x."), 100, None)
    assert (fixed["steps"], fixed["limited_by"]) == (7, "x.max_steps")


def test_training_budget_is_measured_printed_and_obeyed(
    tiny_model: Path, train_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = EmbeddingTrainingConfig(
        base_model=str(tiny_model), epochs=50, batch_size=2, learning_rate=1e-3, budget_minutes=0.001
    )
    meta = train_embeddings(train_file, tmp_path / "budget", cfg)
    plan = meta["training_plan"]
    assert plan["limited_by"] == "embeddings.budget_minutes" and plan["step_time_s"] > 0, plan
    assert plan["steps"] < plan["full_steps"]  # the step time is stored rounded to 1 ms:
    assert plan["steps"] == 1 or (plan["steps"] - 1) * (plan["step_time_s"] - 0.0005) <= 0.06
    assert len(meta["loss_history"]) == plan["steps"], "training ran past its plan"
    printed = capsys.readouterr().out
    assert f"{plan['steps']} steps of 2" in printed and "s/step measured" in printed, printed
    assert "cut from 150 steps" in printed, printed
    fixed = train_embeddings(
        train_file, tmp_path / "fixed", EmbeddingTrainingConfig(base_model=str(tiny_model), max_steps=2)
    )
    assert len(fixed["loss_history"]) == 2 and fixed["training_plan"]["from_clock"] is False
    assert plan["from_clock"] is True  # the metadata says the count came from the clock


def test_default_length_comes_from_the_data_not_the_clock(
    tiny_model: Path, train_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no budget set, max_examples and the data decide the steps; the step time is measured
    only for the printed estimate."""
    cfg = EmbeddingTrainingConfig(base_model=str(tiny_model), epochs=50, batch_size=2, max_examples=7)
    assert EmbeddingTrainingConfig.model_fields["budget_minutes"].default == 0
    plan = train_embeddings(train_file, tmp_path / "m", cfg)["training_plan"]
    assert (plan["steps"], plan["limited_by"], plan["from_clock"]) == (4, "embeddings.max_examples", False)
    assert plan["step_time_s"] > 0 and plan["estimate_s"] is not None
    printed = capsys.readouterr().out
    assert "4 steps of 2" in printed and "about" in printed and "set by embeddings.max_examples" in printed


def _weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_same_inputs_give_the_same_weights_idle_and_under_load(
    tiny_model: Path, train_file: Path, tmp_path: Path
) -> None:
    """The defaults' model does not depend on what else the machine is doing: trained once idle and
    once beside two busy processes, every tensor is bit-identical (same threads, same steps)."""
    import subprocess
    import sys

    cfg = EmbeddingTrainingConfig(base_model=str(tiny_model), epochs=3, batch_size=2, learning_rate=1e-3)
    idle = train_embeddings(train_file, tmp_path / "idle", cfg)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        busy = train_embeddings(train_file, tmp_path / "busy", cfg)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert idle["training_plan"]["steps"] == busy["training_plan"]["steps"] == 9
    assert idle["training_plan"]["step_time_s"] != busy["training_plan"]["step_time_s"]
    a, b = _weights(tmp_path / "idle"), _weights(tmp_path / "busy")
    base = _weights(tiny_model)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "weights differ under load"
    assert any(not a[k].equal(base[k]) for k in a if k in base), "training changed nothing"


def test_a_bad_record_after_blank_lines_is_reported_at_its_real_line(tmp_path: Path) -> None:
    from ragd_train.embeddings.train import teacher_rows

    data = tmp_path / "train.jsonl"
    good = {
        "query": "q",
        "positive": "p",
        "teacher_pair": {"first": {"text": "a"}, "second": {"text": "b"}, "margin": 0.1},
    }
    bad = {**good, "teacher_pair": {**good["teacher_pair"], "margin": "big"}}
    data.write_text("\n".join([json.dumps(good), "", "", json.dumps(good), "", json.dumps(bad)]) + "\n")
    with pytest.raises(InputError) as err:
        teacher_rows(read_training_records(data), data)
    assert (err.value.line, err.value.field) == (6, "teacher_pair.margin")
    data.write_text("\n\n" + json.dumps({"query": "q", "positive": "p", "negatives": "x"}) + "\n")
    with pytest.raises(InputError) as err:
        load_training_examples(data, 1, 0)
    assert (err.value.line, err.value.field) == (3, "negatives")


def _within(seconds: int, func: object, *args: object) -> object:
    """Call ``func(*args)``; fail (instead of hanging the suite) if it runs past ``seconds``."""
    import signal

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        return func(*args)  # type: ignore[operator]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_topping_up_negatives_from_one_document_ends_with_fewer_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record from one document: nothing qualifies to top up; the draw must end (#28)."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"query":"q1","positive":"p1","negatives":["n1","n2"],"source_document":"d"}\n'
        '{"query":"q2","positive":"p2","source_document":"d"}\n'
    )
    rows = _within(10, load_training_examples, path, 2, 1)
    assert [set(r) for r in rows] == [{"anchor", "positive"}] * 2  # in-batch negatives only
    assert "only 0 negatives" in caplog.text and "training every record with 0" in caplog.text
    # with one other document holding one negative: one negative each, never the record's own doc's
    path.write_text(
        path.read_text() + '{"query":"q3","positive":"p3","negatives":["m1"],"source_document":"e"}\n'
    )
    rows = _within(10, load_training_examples, path, 2, 1)
    assert all(set(r) == {"anchor", "positive", "negative_1"} for r in rows)
    assert rows[0]["negative_1"] == "n1" and rows[1]["negative_1"] == "m1"
    assert rows[2]["negative_1"] == "m1"  # its own mined negative


def test_deleting_the_training_data_while_training_keeps_the_model(
    tiny_model: Path, train_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs' checksums were taken after training: a training_data/ removed meanwhile
    threw the trained model away (#28 item 4). They are taken before, of what was trained on."""
    import hashlib

    from sentence_transformers import SentenceTransformerTrainer

    expected = hashlib.sha256(train_file.read_bytes()).hexdigest()
    train = SentenceTransformerTrainer.train

    def train_then_lose_the_data(self: object, *args: object, **kwargs: object) -> object:
        train_file.unlink()  # `rm -r training_data/` while the model trains
        return train(self, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformerTrainer, "train", train_then_lose_the_data)
    out = tmp_path / "models" / "tiny-embeddings"
    cfg = EmbeddingTrainingConfig(base_model=str(tiny_model), epochs=1, batch_size=4, matryoshka_dims="none")
    train_embeddings(train_file, out, cfg)
    stored = json.loads((out / "training_metadata.json").read_text())
    assert stored["inputs"]["training_data"] == {"path": str(train_file), "sha256": expected}


@pytest.mark.parametrize(("learning_rate", "max_steps"), [(1e30, None), (1e39, 1)])
def test_a_diverged_training_is_an_error_and_leaves_no_model(
    tiny_model: Path, train_file: Path, tmp_path: Path, learning_rate: float, max_steps: int | None
) -> None:
    """A huge learning rate made NaN weights that were called ready (#28 item 6): a non-finite
    loss stops training; weights that went non-finite in the last step are caught at the save."""
    out = tmp_path / "models" / "tiny-embeddings"
    cfg = EmbeddingTrainingConfig(
        base_model=str(tiny_model),
        epochs=3,
        batch_size=2,
        learning_rate=learning_rate,
        warmup_ratio=0.0,
        max_steps=max_steps,
        matryoshka_dims="none",
    )
    with pytest.raises(RagdTrainError) as err:
        train_embeddings(train_file, out, cfg)
    message = str(err.value)
    assert "\n" not in message
    assert ("training diverged: the loss became nan" in message) or (
        "model.safetensors: tensor" in message and "has non-finite values" in message
    ), message
    if max_steps == 1:  # one step: its loss was finite, the weights it left are not
        assert "has non-finite values" in message
    assert not out.exists() and not list(out.parent.iterdir())


def test_empty_queries_and_negatives_equal_to_the_positive_are_dropped_alike_by_both_trainers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`embeddings --data` trained on a negative equal to its positive and on empty queries;
    the reranker dropped such negatives only. One policy now (ragd_train/records.py, #28 item 9)."""
    from ragd_train.reranker.train import load_reranker_examples

    path = tmp_path / "pairs.jsonl"
    write_jsonl(
        path,
        [
            {"query": "  ", "positive": "p0", "negatives": ["x"], "source_document": "a"},
            {"query": "q1", "positive": "p1", "negatives": ["p1", "n1"], "source_document": "b"},
            {"query": "q2", "positive": "p2", "negatives": ["n2"], "source_document": "c"},
            {"query": "q3", "positive": "", "negatives": ["n3"], "source_document": "d"},
        ],
    )
    summary = (
        f"{path}: dropped 1 negatives equal to their positive, 1 records with an empty positive, "
        "1 records with an empty query; trained on 2 records"
    )
    rows = load_training_examples(path, 1, 1)
    assert [(r["anchor"], r["negative_1"]) for r in rows] == [("q1", "n1"), ("q2", "n2")]
    assert summary in caplog.text
    caplog.clear()
    reranker_rows = load_reranker_examples(path, 1, 1)
    assert [(r["query"], r["negatives"]) for r in reranker_rows] == [("q1", ["n1"]), ("q2", ["n2"])]
    assert summary in caplog.text
    path.write_text('{"query": "", "positive": "p"}\n')
    for load in (load_training_examples, load_reranker_examples):
        with pytest.raises(InputError, match=r"no usable training records \(1 records with an empty query\)"):
            load(path, 1, 1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty-weights", "model.safetensors: the weights do not load"),
        ("corrupt-config", "config.json:1: not valid JSON"),
        ("empty-config", "config.json:1: not valid JSON"),
    ],
)
def test_a_damaged_base_model_is_one_line(
    tiny_model: Path, train_file: Path, tmp_path: Path, damage: str, message: str
) -> None:
    """A corrupt or empty model.safetensors or config.json in a base model was a traceback (#28 item 10)."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    if damage == "empty-weights":
        (base / "model.safetensors").write_bytes(b"")
    else:
        (base / "config.json").write_text("" if damage == "empty-config" else '{"hidden_size": 32,')
    cfg = EmbeddingTrainingConfig(base_model=str(base), epochs=1, matryoshka_dims="none")
    with pytest.raises(RagdTrainError) as err:
        train_embeddings(train_file, tmp_path / "out", cfg)
    assert str(err.value).startswith(str(base)) and message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()

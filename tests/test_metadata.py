"""training_metadata.json: one pydantic model, read the same way by export, evaluate, `use` and `list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragd_train.errors import InputError
from ragd_train.jsonl_io import write_json
from ragd_train.management import list_models
from ragd_train.metadata import TrainingMetadata, base_metadata, read_metadata, run_stats
from ragd_train.ragd.config import require_model_dir


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing here may read or write the user's own ~/.ragd."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "home"


def embeddings_metadata(tmp_path: Path) -> dict:
    """What the embedding trainer writes: base_metadata plus its own fields (and some no model names)."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q", "positive": "p"}\n')
    meta = base_metadata(
        "embeddings", {"training_data": data, "snapshot": None}, {"epochs": 1, "lr": 2e-5}, seed=7
    )
    meta.update(
        {
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_model_path": "/models/minilm",
            "training_examples": 3,
            "training_plan": {"epochs": 1, "steps": 2},
            "loss": "mnrl",
            "output_dimension": 384,
            "matryoshka_dims": [384, 128],
            "max_seq_length": 256,
            "loss_history": [{"step": 1, "loss": 0.5}],
            **run_stats(1.234, 0.0, "cpu"),
        }
    )
    return meta


def test_a_written_metadata_round_trips(tmp_path: Path) -> None:
    written = embeddings_metadata(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    write_json(model / "training_metadata.json", written)
    meta = read_metadata(model)
    assert isinstance(meta, TrainingMetadata)
    assert meta.kind == "embeddings" and meta.seed == 7 and meta.output_dimension == 384
    assert (
        meta.matryoshka_dims == [384, 128]
        and meta.inputs["training_data"].sha256 == written["inputs"]["training_data"]["sha256"]
    )
    assert meta.model_extra is not None and meta.model_extra["loss_history"] == [{"step": 1, "loss": 0.5}]
    # nothing a writer adds is lost: the model dumps back to the very file it read
    assert meta.model_dump(mode="json", exclude_unset=True) == written
    assert read_metadata(model / "training_metadata.json") == meta  # the file itself reads the same


RERANKER = {
    "reranker_kind": "cross-encoder",
    "kind_choice": None,
    "base_model": "cross-encoder/ms-marco-MiniLM-L6-v2",
    "base_model_path": "/models/ce",
    "base_model_fallback": False,
    "fresh_head": False,
    "base_model_note": None,
    "loss": "bce",
    "training_examples": 3,
    "training_rows": 9,
    "score": "sigmoid",
}
LLM = {
    "backend": "peft",
    "base_model": "smollm2-135m",
    "ollama_base": None,
    "base_model_path": "/models/smollm2",
    "device": "cpu",
    "threads": 4,
    "training_examples": 4,
    "held_out": {"examples": 2, "loss_before": 2.5, "loss_after": 2.1},
    "train_time_s": 3.5,
    "adapter": {"tensors": 28, "bytes": 1000},
    "modelfile": "Modelfile",
    "wall_time_s": 4.0,
    "peak_memory_mb": 900.5,
    "gpu_peak_memory_mb": None,
}


@pytest.mark.parametrize(("kind", "fields"), [("reranker", RERANKER), ("llm", LLM)])
def test_the_other_writers_metadata_round_trips(tmp_path: Path, kind: str, fields: dict) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    written = base_metadata(kind, {"training_data": data}, {"seed": 1}, seed=1) | fields
    write_json(tmp_path / "training_metadata.json", written)
    meta = read_metadata(tmp_path, need=("base_model",))
    assert (
        meta.kind == kind
        and meta.base_model == fields["base_model"]
        and meta.backend == fields.get("backend")
    )
    assert meta.model_dump(mode="json", exclude_unset=True) == written


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "file not found"),
        (b"", "not valid JSON"),
        (b'{"kind": "embeddings",\n "created": ', ":2: not valid JSON"),  # truncated
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "training_metadata.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_metadata(tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"versions": None}, "versions", "is missing"),
        ({"seed": "seven"}, "seed", "integer"),
        ({"inputs": "train.jsonl"}, "inputs", "is not an object"),
        ({"inputs": {"training_data": {"path": "t.jsonl"}}}, "inputs.training_data.sha256", "is missing"),
        ({"matryoshka_dims": ["a"]}, "matryoshka_dims.0", "integer"),
    ],
)
def test_an_invalid_field_is_refused_by_name(tmp_path: Path, change: dict, field: str, says: str) -> None:
    meta = embeddings_metadata(tmp_path)
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    path = tmp_path / "training_metadata.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as caught:
        read_metadata(path)
    assert caught.value.field == field and caught.value.path == str(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_partial_reads_a_hand_written_file_and_need_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "training_metadata.json"
    path.write_text(json.dumps({"base_model": "base/m", "output_dimension": 64, "note": "by hand"}))
    with pytest.raises(InputError, match="field 'kind': is missing"):
        read_metadata(tmp_path)
    meta = read_metadata(tmp_path, partial=True)
    assert meta.output_dimension == 64 and meta.kind is None and meta.model_extra == {"note": "by hand"}
    with pytest.raises(InputError, match=r"training_metadata.json: field 'backend': is missing"):
        read_metadata(tmp_path, partial=True, need=("backend",))
    path.write_text(json.dumps({"output_dimension": "sixty-four"}))
    with pytest.raises(InputError, match="field 'output_dimension'"):
        read_metadata(tmp_path, partial=True)


def test_use_reads_the_output_dimension_through_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    (model / "training_metadata.json").write_text(json.dumps({"output_dimension": 64}))
    assert require_model_dir(model) == 64
    (model / "training_metadata.json").write_text(json.dumps({"base_model": "base/m"}))
    with pytest.raises(InputError, match="field 'output_dimension': is missing"):
        require_model_dir(model)
    (model / "training_metadata.json").write_text('{"output_dimension": 6')
    with pytest.raises(InputError, match="training_metadata.json:1: not valid JSON"):
        require_model_dir(model)


def test_list_shows_what_can_be_read_and_names_each_bad_field(tmp_path: Path) -> None:
    model = tmp_path / "ws" / "models" / "odd-embeddings"
    model.mkdir(parents=True)
    meta = embeddings_metadata(tmp_path) | {"base_model": 5, "created": ["today"]}
    (model / "training_metadata.json").write_text(json.dumps(meta))
    (row,) = list_models(tmp_path / "ws")
    assert row["kind"] == "embeddings" and row["base_model"] is None
    assert row["training_data_sha256"] == meta["inputs"]["training_data"]["sha256"]
    assert [p.split(": ", 1)[1] for p in row["problems"]] == [
        "field 'created' should be a valid string",
        "field 'base_model' should be a valid string",
    ]
    assert row["created"] != ["today"] and row["created"].endswith("+00:00")  # the folder's time

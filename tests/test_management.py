"""list / delete / export of workspace models, and `ragd config set` on ragd's own config file."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragd_train.cli import main
from ragd_train.errors import RagdTrainError
from ragd_train.management import delete_model, export_model, list_models, model_path, verify_export
from ragd_train.ragd_config import set_value


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace holding one fake-but-complete model directory and its report."""
    ws = tmp_path / "ws"
    model = ws / "models" / "demo-embeddings"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    (model / "config.json").write_text("{}")
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    meta = {
        "kind": "embeddings",
        "created": "2026-11-27T10:00:00+00:00",
        "base_model": "base/m",
        "output_dimension": 384,
        "inputs": {"training_data": {"path": "t.jsonl", "sha256": "ab" * 32}},
    }
    (model / "training_metadata.json").write_text(json.dumps(meta))
    (ws / "reports").mkdir()
    headline = {"metric": "ndcg@10", "base": 0.5, "finetuned": 0.6, "delta": 0.1}
    (ws / "reports" / "demo-embeddings.json").write_text(json.dumps({"headline": headline}))
    (ws / "outside").mkdir()
    (ws / "outside" / "precious.txt").write_text("keep me")
    return ws


def test_list_reports_metadata_and_headline(ws: Path) -> None:
    (row,) = list_models(ws)
    assert row["name"] == "demo-embeddings" and row["kind"] == "embeddings" and row["base_model"] == "base/m"
    assert row["size_bytes"] >= 1000 and row["training_data_sha256"] == "ab" * 32
    assert row["headline"]["delta"] == 0.1
    result = CliRunner().invoke(main, ["train", "list", "--workspace", str(ws), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)[0]["name"] == "demo-embeddings"
    table = CliRunner().invoke(main, ["train", "list", "--workspace", str(ws)], env={"COLUMNS": "200"})
    assert "demo-embeddings" in table.output and "0.600 (+0.100)" in table.output


@pytest.mark.parametrize("name", ["../outside", "/etc", "..", ".", "a/b", ""])
def test_names_that_escape_are_refused(ws: Path, name: str) -> None:
    with pytest.raises(RagdTrainError):
        delete_model(ws, name)
    assert (ws / "outside" / "precious.txt").exists()


def test_symlink_out_of_models_is_refused(ws: Path) -> None:
    os.symlink(ws / "outside", ws / "models" / "sneaky")
    with pytest.raises(RagdTrainError, match="outside"):
        model_path(ws / "models", "sneaky")
    result = CliRunner().invoke(main, ["train", "delete", "sneaky", "--yes", "--workspace", str(ws)])
    assert result.exit_code == 1 and "refused" in result.output
    assert (ws / "outside" / "precious.txt").exists()


def test_delete_asks_then_removes(ws: Path) -> None:
    runner = CliRunner()
    kept = runner.invoke(main, ["train", "delete", "demo-embeddings", "--workspace", str(ws)], input="n\n")
    assert kept.exit_code == 1 and (ws / "models" / "demo-embeddings").exists()
    gone = runner.invoke(main, ["train", "delete", "demo-embeddings", "--workspace", str(ws)], input="y\n")
    assert gone.exit_code == 0 and not (ws / "models" / "demo-embeddings").exists()
    missing = runner.invoke(main, ["train", "delete", "demo-embeddings", "--yes", "--workspace", str(ws)])
    assert missing.exit_code == 1 and "no model" in missing.output


def test_export_tar_has_manifest_that_verifies(ws: Path, tmp_path: Path) -> None:
    archive = export_model(ws, "demo-embeddings", tmp_path / "out")
    assert archive == tmp_path / "out" / "demo-embeddings.tar.gz"
    checked = verify_export(archive)
    assert "demo-embeddings/model.safetensors" in checked
    assert "demo-embeddings/report/demo-embeddings.json" in checked
    assert "demo-embeddings/training_metadata.json" in checked
    # Tampering is caught.
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("config.json") and "Pooling" not in member.name:
                data = b'{"tampered": 1}'
                member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(RagdTrainError, match="checksum mismatch"):
        verify_export(bad)


def test_export_hf_is_plain_directory(ws: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "train",
            "export",
            "demo-embeddings",
            "--to",
            str(tmp_path / "hf"),
            "--format",
            "hf",
            "--workspace",
            str(ws),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hf" / "model.safetensors").exists() and (tmp_path / "hf" / "1_Pooling").is_dir()
    assert not (tmp_path / "hf" / "training_metadata.json").exists()


RAGD_CONFIG = """\
# ragd configuration (written by ragd)
version: 2
embedding:
  model: all-MiniLM-L6-v2  # the default embedder
  dimension: 384
  batch_size: 32
llm:
  model: llama3.2:3b
retrieval:
  # how many chunks to return
  top_k: 5
"""


def test_config_set_keeps_other_keys_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAGD_CONFIG)
    set_value(path, "llm.model", "qwen2.5:7b")
    text = path.read_text()
    assert "llm:\n  model: qwen2.5:7b" in text
    expected = RAGD_CONFIG.replace("llama3.2:3b", "qwen2.5:7b")
    assert text == expected
    set_value(path, "retrieval.top_k", "8")
    assert "  top_k: 8\n" in path.read_text() and "# how many chunks to return" in path.read_text()


def test_config_set_embedding_model_sets_dimension_and_warns(ws: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAGD_CONFIG.replace("dimension: 384", "dimension: 768"))
    model = ws / "models" / "demo-embeddings"
    result = CliRunner().invoke(main, ["config", "set", "embedding.model", str(model), "--file", str(path)])
    assert result.exit_code == 0, result.output
    assert "ragd reindex --all" in result.output and "embedding.dimension set to 384" in result.output
    text = path.read_text()
    import re

    assert (
        re.search(rf"model: {re.escape(str(model))} +# the default embedder", text)
        and "dimension: 384" in text
    )
    assert "# ragd configuration (written by ragd)" in text and "batch_size: 32" in text


def test_config_set_refuses_training_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAGD_CONFIG)
    result = CliRunner().invoke(
        main, ["config", "set", "training.embedding_epochs", "5", "--file", str(path)]
    )
    assert result.exit_code == 1 and "training setting" in result.output
    assert path.read_text() == RAGD_CONFIG

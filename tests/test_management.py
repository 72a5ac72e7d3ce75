"""list / delete / export of workspace models, and `ragd config set` on ragd's own config file."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from ragd_train.cli import main
from ragd_train.errors import InputError, RagdTrainError
from ragd_train.management import delete_model, export_model, list_models, model_path
from ragd_train.ragd import config as ragd_config
from ragd_train.ragd.config import set_values


def _save_weights(path: Path, value: float = 0.0) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"embeddings.word_embeddings.weight": torch.full((32, 8), value)}, str(path))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace holding one fake-but-complete model directory and its report."""
    ws = tmp_path / "ws"
    model = ws / "models" / "demo-embeddings"
    model.mkdir(parents=True)
    _save_weights(model / "model.safetensors")
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


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[1, 2]", "training_metadata.json: not a JSON object"),
        (b"\xff\xfe{}", "training_metadata.json: not UTF-8 text"),
        (b'{"kind": "embeddings",\n "base_model": ', "training_metadata.json:2: not valid JSON"),
        (b'{"kind": "embeddings", "inputs": "t.jsonl"}', "field 'inputs' is not an object"),
    ],
)
def test_list_names_a_bad_metadata_file_and_still_lists_the_rest(
    ws: Path, content: bytes, problem: str
) -> None:
    bad = ws / "models" / "broken"
    bad.mkdir()
    (bad / "training_metadata.json").write_bytes(content)
    (ws / "reports" / "broken.json").write_text('{"headline": {"finetuned": "x", "delta": null}}')
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["train", "list", "--workspace", str(ws)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert problem in warning and str(bad) in warning
    assert "broken" in result.stdout and "0.600 (+0.100)" in result.stdout
    as_json = CliRunner().invoke(main, ["train", "list", "--workspace", str(ws), "--json"])
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert problem in rows["broken"]["problems"][0] and rows["demo-embeddings"]["problems"] == []
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before


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


def verify_export(archive: Path) -> dict[str, str]:
    """Check every file of an exported tar.gz against its MANIFEST.json; return ``{name: sha256}``."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        manifest_name = next((n for n in members if n.endswith("/MANIFEST.json")), None)
        if manifest_name is None:
            raise RagdTrainError(f"{archive}: no MANIFEST.json")
        manifest = json.loads(tar.extractfile(members[manifest_name]).read())
        checked: dict[str, str] = {}
        for arcname, entry in manifest["files"].items():
            member = members.get(arcname)
            if member is None:
                raise RagdTrainError(f"{archive}: {arcname} listed in the manifest but missing")
            digest = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
            if digest != entry["sha256"]:
                raise RagdTrainError(f"{archive}: {arcname} checksum mismatch")
            checked[arcname] = digest
    return checked


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


@pytest.fixture
def no_ragd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as where ragd itself is not installed."""
    monkeypatch.setattr(ragd_config, "ragd_installed", lambda: False)


def test_config_without_ragd_keeps_other_keys_and_comments(tmp_path: Path, no_ragd: None) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAGD_CONFIG)
    path.chmod(0o644)
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    set_values({"llm.model": "qwen2.5:7b"}, link)
    assert link.is_symlink() and path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == RAGD_CONFIG.replace("llama3.2:3b", "qwen2.5:7b")


def test_config_without_ragd_refuses_unknown_keys_and_scalars(tmp_path: Path, no_ragd: None) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(RAGD_CONFIG)
    with pytest.raises(
        InputError, match=r"does not write 'retrieval.reranker_model' \(known: embedding.model"
    ):
        set_values({"retrieval.reranker_model": "x"}, path)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("embedding: all-MiniLM-L6-v2\n")
    with pytest.raises(InputError, match="'embedding' is a str, not a section"):
        set_values({"embedding.model": "x"}, scalar)
    assert path.read_text() == RAGD_CONFIG and scalar.read_text() == "embedding: all-MiniLM-L6-v2\n"


def test_use_writes_through_ragds_own_config_model(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragd train use` sets embedding.model and .dimension; ragd's own load_config reads them back."""
    ragd_cfg = pytest.importorskip("ragd.config")
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".ragd" / "config.yaml"
    path.parent.mkdir()
    path.write_text(RAGD_CONFIG.replace("dimension: 384", "dimension: 768"))
    model = ws / "models" / "demo-embeddings"
    (model / "modules.json").write_text("[]")
    result = CliRunner().invoke(main, ["train", "use", "demo-embeddings", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    loaded = ragd_cfg.load_config(path)
    assert loaded.embedding.model == str(model.resolve()) and loaded.embedding.dimension == 384
    assert loaded.llm.model == "llama3.2:3b"
    assert "dimension changed (768 -> 384)" in result.output and "--overwrite" in result.output
    assert "reranker_model" not in path.read_text()


def test_use_refuses_what_is_not_an_embedding_model(ws: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["train", "use", str(tmp_path), "--workspace", str(ws)])
    assert result.exit_code == 1 and "is not a sentence-transformers model directory" in result.output
    assert not (tmp_path / ".ragd").exists()


def test_export_never_overwrites_or_deletes_what_is_there(ws: Path, tmp_path: Path) -> None:
    """A tar export refuses an existing archive; an hf export leaves a user's .NAME.tmp folder alone."""
    archive = tmp_path / "out" / "demo-embeddings.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"an older archive")
    with pytest.raises(RagdTrainError, match="already exists"):
        export_model(ws, "demo-embeddings", archive)
    assert archive.read_bytes() == b"an older archive"
    users = tmp_path / ".hf-dir.tmp"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    out = export_model(ws, "demo-embeddings", tmp_path / "hf-dir", "hf")
    assert (out / "model.safetensors").is_file() and (users / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".hf-dir")) == [".hf-dir.tmp"]


@pytest.mark.parametrize("fmt", ["tar", "hf"])
def test_export_refuses_symlinks_in_the_model(ws: Path, tmp_path: Path, fmt: str) -> None:
    """A link inside a model directory would export the file it points at: refused, nothing written."""
    (ws / "models" / "demo-embeddings" / "leak.txt").symlink_to("/etc/hostname")
    dest = tmp_path / ("x.tar.gz" if fmt == "tar" else "x")
    with pytest.raises(RagdTrainError, match=r"leak.txt: symlinks in a model directory are not exported"):
        export_model(ws, "demo-embeddings", dest, fmt)
    assert not dest.exists() and not list(tmp_path.glob(".x*"))


def test_delete_of_a_symlink_in_models_is_one_line_and_deletes_nothing(ws: Path) -> None:
    link = ws / "models" / "alias"
    link.symlink_to(ws / "models" / "demo-embeddings")
    result = CliRunner().invoke(main, ["train", "delete", "alias", "--workspace", str(ws), "--yes"])
    assert result.exit_code == 1 and "is a symlink, not a model directory" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert link.is_symlink() and (ws / "models" / "demo-embeddings" / "model.safetensors").is_file()


def test_export_to_a_device_or_into_the_model_is_one_line(ws: Path, tmp_path: Path) -> None:
    """`export --to /dev/full` and an hf export into the model's own folder were tracebacks (#28)."""
    model = ws / "models" / "demo-embeddings"
    before = sorted(p.name for p in model.rglob("*"))
    runner = CliRunner()
    for fmt, dest, expected in [
        ("tar", "/dev/full", "demo-embeddings.tar.gz: cannot be written: /dev/full is not a folder"),
        ("tar", "/dev/full/x.tar.gz", "cannot be written: /dev/full is not a folder"),
        ("hf", str(model / "hf"), "is inside the model's own folder"),
        ("tar", str(model / "x.tar.gz"), "is inside the model's own folder"),
    ]:
        args = ["train", "export", "demo-embeddings", "--to", dest, "--format", fmt, "--workspace", str(ws)]
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and expected in result.output, (dest, result.output)
        assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in model.rglob("*")) == before


def test_export_tar_over_a_symlink_is_refused(ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.tar.gz"
    target.write_bytes(b"keep")
    link = tmp_path / "out.tar.gz"
    link.symlink_to(target)
    with pytest.raises(RagdTrainError, match="already exists"):
        export_model(ws, "demo-embeddings", link)
    dangling = tmp_path / "dangling.tar.gz"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(RagdTrainError, match="already exists"):
        export_model(ws, "demo-embeddings", dangling)
    assert link.is_symlink() and target.read_bytes() == b"keep" and dangling.is_symlink()
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "the weights do not load"),
        ("empty", "the weights do not load"),
        ("nan", "tensor 'embeddings.word_embeddings.weight' has non-finite values"),
        ("inf", "tensor 'embeddings.word_embeddings.weight' has non-finite values"),
        ("width", "has shape (32, 8), but config.json says the model is 16 wide"),
    ],
)
def test_a_model_with_damaged_weights_is_neither_used_nor_exported(
    ws: Path, tmp_path: Path, damage: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`use` took a truncated model.safetensors, and NaN weights were exported (#28 item 6)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    model = ws / "models" / "demo-embeddings"
    weights = model / "model.safetensors"
    (model / "modules.json").write_text("[]")
    meta = json.loads((model / "training_metadata.json").read_text())
    (model / "training_metadata.json").write_text(json.dumps({**meta, "output_dimension": 8}))
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "width":
        (model / "config.json").write_text('{"hidden_size": 16}')
    else:
        _save_weights(weights, float(damage))
    runner = CliRunner()
    export = ["export", "demo-embeddings", "--to", str(tmp_path / "x.tar.gz")]
    for args in (["use", "demo-embeddings"], export):
        result = runner.invoke(main, ["train", *args, "--workspace", str(ws)])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {weights}: ") and reason in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.tar.gz").exists() and not (tmp_path / "home" / ".ragd").exists()

"""Helpers the test folders share: the workflow runner, and the Ollama test server's scripted model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = "llama3.2:3b"  # the model the Ollama test server offers
# The fields of a training record that build_training_data writes.
RECORD_KEYS = {
    "query",
    "query_id",
    "positive",
    "positive_id",
    "negatives",
    "source_document",
    "generator",
    "filter",
    "teacher_pair",
    "split",  # train (the held-out dev and test records have no teacher_pair)
}


def snakemake(workspace: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workspace),
        "--cores",
        "2",
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ}, check=False
    )


def cfgargs(cfg: Path) -> list[str]:
    return ["--configfile", str(ROOT / "config" / "config.yaml"), str(cfg)]


def judged(prompt: str) -> dict[str, str]:
    """The (query, passage) data object of a judge prompt: its last line."""
    return json.loads(prompt.rsplit("\n", 1)[1])


def questions_for(passage: str) -> list[str]:
    tag = hashlib.sha256(passage.encode()).hexdigest()[:8]
    return [f"How does feature {tag} work?", f"weak question about {tag}?"]


def passage_of(prompt: str) -> str:
    return prompt.split('"""')[1].strip()


def responder(body: dict[str, Any]) -> str:
    """Queries: two per passage, one of them 'weak'; judge: 2 for weak queries, 5 for the rest."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("Rate how well"):
        query = judged(prompt)["query"]
        return json.dumps({"score": 2 if "weak" in query else 5, "reason": "checked"})
    return json.dumps(questions_for(passage_of(prompt)))


def need_ragd() -> None:
    try:  # not ragd.cli: importing it creates ~/.ragd/logs in the real HOME
        import ragd.chat.history  # noqa: F401
    except ImportError as exc:
        if os.environ.get("RAGD_TRAIN_REQUIRE_RAGD") == "1":
            pytest.fail(f"RAGD_TRAIN_REQUIRE_RAGD=1 but ragd does not import ({exc})")
        pytest.skip("ragd is not installed")


def save_session(folder: Path, session_id: str, turns: list[tuple[str, Any]]) -> Path:
    """A session as ragd's chat saves it: each question, then (unless None) an answer citing
    ``citations`` (ragd ``Citation`` objects, or dicts of their fields)."""
    from ragd.chat.history import ChatHistory, save_history
    from ragd.citation import Citation

    history = ChatHistory(session_id=session_id)
    for question, citations in turns:
        history.add_user_message(question)
        if citations is not None:
            cites = [c if isinstance(c, Citation) else Citation(**c) for c in citations]
            history.add_assistant_message("Here is what your documents say [1].", citations=cites)
    path = folder / f"{session_id}.json"
    save_history(history, path)
    return path


def chat_record(chars: int) -> dict[str, Any]:
    """A RAFT chat record whose user message is ``chars`` characters long."""
    return {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u" * chars},
            {"role": "assistant", "content": "a"},
        ]
    }


# ---------------------------------------------------------------- Ollama's on-disk store

MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"


def _ollama_blob(store: Path, data: bytes | None = None, source: Path | None = None) -> dict[str, Any]:
    """Write a blob as Ollama names it (``sha256-<hex of its bytes>``); its digest and size."""
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    if source is not None:
        digest = hashlib.sha256()
        with source.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        hexdigest = digest.hexdigest()
        target = blobs / f"sha256-{hexdigest}"
        if not target.exists():  # one blob per content, as Ollama keeps it
            try:
                os.link(source, target)  # a real file with the same bytes (the store is only read)
            except OSError:
                shutil.copyfile(source, target)
    else:
        assert data is not None
        hexdigest = hashlib.sha256(data).hexdigest()
        target = blobs / f"sha256-{hexdigest}"
        target.write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": target.stat().st_size}


def write_ollama_model(store: Path, name: str, tag: str, gguf: Path, *, model_layer: bool = True) -> Path:
    """One model as ``ollama pull`` leaves it: config, model, template and params layers, a manifest."""
    config = _ollama_blob(store, json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    layers = []
    if model_layer:
        layers.append({"mediaType": "application/vnd.ollama.image.model", **_ollama_blob(store, source=gguf)})
    template = b"{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    layers.append({"mediaType": "application/vnd.ollama.image.template", **_ollama_blob(store, template)})
    layers.append(
        {
            "mediaType": "application/vnd.ollama.image.params",
            **_ollama_blob(store, b'{"stop":["<|im_end|>"]}'),
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
        "layers": layers,
    }
    path = store / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path

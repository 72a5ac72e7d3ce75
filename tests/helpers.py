"""Helpers the test folders share: the workflow runner, and the Ollama test server's scripted model."""

from __future__ import annotations

import hashlib
import json
import os
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

"""What to run to use a trained model in ragd: the messages printed after each training.

``ragd_config_hint`` gives ragd's commands that switch to an embedding model and re-embed the
index, ``ragd_reranker_hint`` says what ragd can do with a reranker, and ``ragd_llm_hint`` gives
the ``ollama create`` and ``ragd models set --chat`` commands for a chat-model adapter.
"""

from __future__ import annotations

from pathlib import Path

from ragd_train.hub import model_kind
from ragd_train.ragd.config import switch_message


def ragd_config_hint(model_dir: str | Path, dimension: int, folders: list[str] | None = None) -> str:
    """The ragd 1.0.10 commands that switch ragd to the model and re-embed its index."""
    return switch_message(Path(model_dir), dimension, folders or [])


def ragd_reranker_hint(model_dir: str | Path) -> str:
    """What ragd 1.0.10 can do with the model: no setting of ragd's calls a reranker."""
    path = Path(model_dir).resolve()
    kind = "ColBERT (late-interaction)" if model_kind(path) == "colbert" else "cross-encoder"
    note = " ragd's CrossEncoderReranker cannot load it." if kind.startswith("ColBERT") else ""
    return (
        f"{path} is a {kind} reranker.{note} ragd 1.0.10 never calls a reranker (its "
        "`retrieval.rerank` is read nowhere), so there is no ragd setting to switch; rerank ragd's "
        "own results with ragd_train.reranker.scoring.FineTunedReranker(path).rerank(query, results)."
    )


def ollama_create_command(model_dir: str | Path) -> str:
    path = Path(model_dir).resolve()
    return f"cd {path} && ollama create {path.name} -f Modelfile"


def ragd_llm_hint(model_dir: str | Path) -> str:
    """What to run to serve the adapter through Ollama and make ragd chat with it."""
    name = Path(model_dir).resolve().name
    return (
        f"To chat with this adapter in ragd:\n  {ollama_create_command(model_dir)}\n"
        f"  ragd models set --chat {name}"
    )

"""The one policy for reaching Ollama: the client when it answers and has the model, else why not.

A setting that asked for Ollama by name (``generate.query_generator: ollama``, ``raft.answers: ollama``) makes
an unreachable server an error that says how to start it and which value does without it; everywhere
else the caller falls back and reports the reason.
"""

from __future__ import annotations

from typing import Any

from ragd_train.errors import RagdTrainError


def _client(config: dict[str, Any]) -> Any:
    from ragd_train.chat.ollama import OllamaLLM

    o = config["ollama"]
    return OllamaLLM(
        o["host"],
        o["model"],
        temperature=o["temperature"],
        timeout=o["timeout"],
        retries=o["retries"],
        backoff=o["backoff"],
        seed=config["seed"],
    )


def connect(config: dict[str, Any], *, required_by: str = "", instead: str = "") -> tuple[Any | None, str]:
    """``(client, "")`` when Ollama answers and has the model, or ``(None, why not)`` from one probe;
    with ``required_by`` (the setting that asked for Ollama), no client is an error naming that
    setting's value ``instead`` that needs no LLM."""
    llm = _client(config)
    problem = llm.problem()
    if problem is None:
        return llm, ""
    if required_by:
        raise RagdTrainError(
            f"{problem}; start it (`ollama serve`, `ollama pull {config['ollama']['model']}`) "
            f"or set {required_by}: {instead}"
        )
    return None, problem


def connect_judge(config: dict[str, Any]) -> tuple[Any | None, str]:
    """The Ollama client that grades the reports (``evaluation.llm_judge``), or None and why not."""
    if not config["evaluation"].get("llm_judge", True):
        return None, "evaluation.llm_judge is off"
    llm, problem = connect(config)
    return llm, f"no LLM reachable: {problem}" if llm is None else ""

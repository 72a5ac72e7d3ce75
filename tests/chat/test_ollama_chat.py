"""OllamaLLM driving the real `ollama` client against a real local HTTP server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import ollama
import pytest

from ragd_train.chat.ollama import PROBE_TIMEOUT, LLMError, OllamaLLM
from ragd_train.errors import RagdTrainError

try:
    from tests.ollama_server import OllamaTestServer, free_port, model_entry, silent_server
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from ollama_server import OllamaTestServer, free_port, model_entry, silent_server

MODEL = "llama3.2:3b"
USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def srv() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(models=[MODEL, "nomic-embed-text"], hang_seconds=3.0) as server:
        yield server


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_llm(url: str, model: str = MODEL, **kw: object) -> tuple[OllamaLLM, Sleeps]:
    params: dict[str, object] = {"timeout": 0.5, "retries": 3, "backoff": 0.25} | kw
    llm = OllamaLLM(url, model, **params)  # type: ignore[arg-type]
    sleeps = Sleeps()
    llm.sleep = sleeps
    return llm, sleeps


# -- success path ----------------------------------------------------------------


def test_chat_sends_model_messages_and_options(srv: OllamaTestServer) -> None:
    llm, sleeps = make_llm(srv.url, temperature=0.2, seed=42)
    assert llm.chat(USER, options={"num_ctx": 4096}) == "echo: hello"
    (body,) = srv.bodies("/api/chat")
    assert body is not None
    assert body["model"] == MODEL
    assert body["messages"] == USER
    assert body["stream"] is False
    assert body["options"] == {"temperature": 0.2, "seed": 42, "num_ctx": 4096}
    assert "format" not in body
    assert llm.stats == {"calls": 1, "retries": 0, "failures": 0}
    assert sleeps == []


def test_chat_options_override_defaults_and_seed_omitted_when_none(srv: OllamaTestServer) -> None:
    llm, _ = make_llm(srv.url, temperature=0.7)
    llm.chat(USER, options={"temperature": 0.0})
    (body,) = srv.bodies("/api/chat")
    assert body is not None and body["options"] == {"temperature": 0.0}


def test_chat_json_format(srv: OllamaTestServer) -> None:
    llm, _ = make_llm(srv.url)
    answer = llm.chat(USER, json_format=True)
    assert json.loads(answer) == {"echo": "hello"}
    (body,) = srv.bodies("/api/chat")
    assert body is not None and body["format"] == "json"


def test_responder_decides_the_answer(srv: OllamaTestServer) -> None:
    srv.responder = lambda body: f"{len(body['messages'])} messages"
    llm, _ = make_llm(srv.url)
    messages = [{"role": "system", "content": "be brief"}, *USER]
    assert llm.chat(messages) == "2 messages"


def test_generate(srv: OllamaTestServer) -> None:
    llm, _ = make_llm(srv.url, seed=7)
    assert llm.generate("why is the sky blue?") == "echo: why is the sky blue?"
    (body,) = srv.bodies("/api/generate")
    assert body is not None
    assert body["model"] == MODEL and body["prompt"] == "why is the sky blue?"
    assert body["stream"] is False
    assert body["options"] == {"temperature": 0.7, "seed": 7}
    assert srv.calls["/api/chat"] == 0


def test_model_tag_latest_is_implied(srv: OllamaTestServer) -> None:
    llm, _ = make_llm(srv.url, model="nomic-embed-text:latest")
    assert llm.available()
    llm, _ = make_llm(srv.url, model="nomic-embed-text")
    assert llm.available()
    assert llm.chat(USER) == "echo: hello"


# -- server shapes the real client accepts ---------------------------------------


def test_server_speaks_real_ollama_shapes(srv: OllamaTestServer) -> None:
    client = ollama.Client(host=srv.url, timeout=2)
    listed = client.list().models
    assert [m.model for m in listed] == [MODEL, "nomic-embed-text:latest"]
    assert listed[0].digest == model_entry(MODEL)["digest"]
    assert listed[0].details is not None and listed[0].details.family == "llama"
    assert client.show(MODEL).details is not None
    with pytest.raises(ollama.ResponseError) as err:
        client.show("absent")
    assert err.value.status_code == 404
    chat = client.chat(model=MODEL, messages=USER, stream=False)
    assert chat.done and chat.done_reason == "stop" and chat.eval_count
    gen = client.generate(model=MODEL, prompt="x", stream=False)
    assert gen.done and gen.response == "echo: x"


def test_server_streams_ndjson(srv: OllamaTestServer) -> None:
    client = ollama.Client(host=srv.url, timeout=2)
    parts = list(client.chat(model=MODEL, messages=USER, stream=True))
    assert len(parts) > 2
    assert "".join(p.message.content or "" for p in parts) == "echo: hello"
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    text = "".join(p.response or "" for p in client.generate(model=MODEL, prompt="a b", stream=True))
    assert text == "echo: a b"


# -- available / model_digest ------------------------------------------------------


def test_available_true_and_false(srv: OllamaTestServer) -> None:
    assert make_llm(srv.url)[0].available() is True
    assert make_llm(srv.url, model="mistral:7b")[0].available() is False
    assert make_llm(srv.url, model="llama3.2")[0].available() is False  # means llama3.2:latest
    assert srv.calls["/api/tags"] == 3


def test_available_matches_name_only_entries(srv: OllamaTestServer) -> None:
    srv.models = [{"name": "old:7b", "digest": "abc"}]  # older servers sent no "model"
    llm, _ = make_llm(srv.url, model="old:7b")
    assert llm.available()
    assert llm.model_digest() == "abc"


def test_available_false_when_server_down() -> None:
    llm, _ = make_llm(f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert llm.available() is False
    assert time.monotonic() - started < 3


def test_available_false_when_server_never_answers() -> None:
    with silent_server() as url:
        llm, _ = make_llm(url, timeout=0.3)
        started = time.monotonic()
        assert llm.available() is False
        assert time.monotonic() - started < 2
    assert PROBE_TIMEOUT <= 3


def test_model_digest(srv: OllamaTestServer) -> None:
    llm, _ = make_llm(srv.url)
    assert llm.model_digest() == model_entry(MODEL)["digest"]
    assert len(llm.model_digest()) == 64


def test_model_digest_missing_model_or_digest(srv: OllamaTestServer) -> None:
    with pytest.raises(LLMError, match=r"no model 'mistral'.*ollama pull mistral"):
        make_llm(srv.url, model="mistral")[0].model_digest()
    srv.models = [model_entry(MODEL, digest="")]
    with pytest.raises(LLMError, match="no digest"):
        make_llm(srv.url)[0].model_digest()


def test_model_digest_server_down() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LLMError, match=r"cannot list models.*ConnectionError") as err:
        make_llm(url)[0].model_digest()
    assert url in str(err.value)
    assert isinstance(err.value, RagdTrainError)


# -- retries -------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "drop", "malformed", "empty", "429"])
def test_each_fault_is_retried_then_succeeds(srv: OllamaTestServer, fault: str) -> None:
    srv.faults.extend([fault, fault])
    llm, sleeps = make_llm(srv.url)
    assert llm.chat(USER) == "echo: hello"
    assert srv.calls["/api/chat"] == 3
    assert srv.faults == []
    assert sleeps == [0.25, 0.5]  # backoff * 2**attempt
    assert llm.stats == {"calls": 1, "retries": 2, "failures": 0}


@pytest.mark.parametrize("fault", ["500", "timeout", "drop", "malformed", "empty"])
def test_generate_retries_too(srv: OllamaTestServer, fault: str) -> None:
    srv.faults.append(fault)
    llm, sleeps = make_llm(srv.url)
    assert llm.generate("p") == "echo: p"
    assert srv.calls["/api/generate"] == 2
    assert sleeps == [0.25]


def test_whitespace_only_answer_counts_as_empty(srv: OllamaTestServer) -> None:
    answers = iter([" \n ", "real"])
    srv.responder = lambda body: next(answers)
    llm, _ = make_llm(srv.url)
    assert llm.chat(USER) == "real"
    assert llm.stats["retries"] == 1


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("500", r"ResponseError: injected fault 500 \(status code: 500\)"),
        ("timeout", "ReadTimeout"),
        ("drop", "RemoteProtocolError"),
        ("malformed", "JSONDecodeError"),
        ("empty", "empty answer"),
    ],
)
def test_faults_exhaust_retries(srv: OllamaTestServer, fault: str, cause: str) -> None:
    srv.faults.extend([fault] * 3)
    llm, sleeps = make_llm(srv.url, retries=2, backoff=1.0)
    with pytest.raises(LLMError) as err:
        llm.chat(USER)
    message = str(err.value)
    assert "\n" not in message
    assert srv.url in message and MODEL in message and "after 3 attempt(s)" in message
    assert re.search(cause, message), message
    assert srv.calls["/api/chat"] == 3
    assert sleeps == [1.0, 2.0]
    assert llm.stats == {"calls": 1, "retries": 2, "failures": 1}


def test_server_down_exhausts_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    llm, sleeps = make_llm(url, retries=1)
    with pytest.raises(LLMError) as err:
        llm.generate("p")
    message = str(err.value)
    assert url in message and "after 2 attempt(s)" in message
    assert "ConnectionError: Failed to connect to Ollama" in message
    assert sleeps == [0.25]


def test_zero_retries_means_one_attempt(srv: OllamaTestServer) -> None:
    srv.faults.append("500")
    llm, sleeps = make_llm(srv.url, retries=0)
    with pytest.raises(LLMError, match=r"after 1 attempt\(s\)"):
        llm.chat(USER)
    assert srv.calls["/api/chat"] == 1 and sleeps == []


def test_real_timeout_is_bounded(srv: OllamaTestServer) -> None:
    srv.faults.extend(["timeout", "timeout"])
    llm, _ = make_llm(srv.url, retries=1, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(LLMError, match="ReadTimeout"):
        llm.chat(USER)
    assert time.monotonic() - started < 2.0


def test_default_sleep_is_real_backoff(srv: OllamaTestServer) -> None:
    srv.faults.append("500")
    llm = OllamaLLM(srv.url, MODEL, timeout=0.5, retries=1, backoff=0.2)
    started = time.monotonic()
    assert llm.chat(USER) == "echo: hello"
    assert time.monotonic() - started >= 0.2


# -- 4xx fails at once -------------------------------------------------------------------


def test_unknown_model_is_not_retried(srv: OllamaTestServer) -> None:
    llm, sleeps = make_llm(srv.url, model="mistral:7b")
    with pytest.raises(LLMError) as err:
        llm.chat(USER)
    message = str(err.value)
    assert "not retried" in message and "status code: 404" in message
    assert 'model "mistral:7b" not found' in message and "ollama pull mistral:7b" in message
    assert srv.calls["/api/chat"] == 1 and sleeps == []
    assert llm.stats == {"calls": 1, "retries": 0, "failures": 1}


def test_injected_400_after_a_500_stops_retrying(srv: OllamaTestServer) -> None:
    srv.faults.extend(["500", "400", "500"])
    llm, sleeps = make_llm(srv.url)
    with pytest.raises(LLMError, match=r"attempt 2, not retried.*status code: 400"):
        llm.generate("p")
    assert srv.calls["/api/generate"] == 2 and sleeps == [0.25]
    assert srv.faults == ["500"]


def test_negative_retries_rejected() -> None:
    with pytest.raises(ValueError):
        OllamaLLM(retries=-1)

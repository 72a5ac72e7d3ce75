#!/usr/bin/env bash
# CUDA check of the embeddings, reranker (ColBERT) and PEFT LoRA trainers: see bench/cuda_check.py.
# For a GPU machine without internet that gets this checkout plus .devcarry/ (ignored, not in git):
#   .devcarry/whl/                 wheels the machine lacks: datasets 5.0.0 (5.2 needs huggingface_hub
#                                  >= 1.31, transformers 5.17 allows 1.5), dill, multiprocess; optional/:
#                                  requests and its dependencies, installed only when missing
#   .devcarry/minilm/              all-MiniLM-L6-v2 with its weights in fp16 (restored to fp32 here)
#   .devcarry/data/                the demo corpus's train.jsonl, raft.jsonl, raft_test.jsonl
#   .devcarry/smollm2-tokenizer/   SmolLM2's tokenizer, for the tiny Llama of the LoRA step
#
#   bash bench/cuda_check.sh                      # results in $OUT (else ./cuda_check_out)
#   PYTHON=.venv/bin/python SKIP_WHEELS=1 bash bench/cuda_check.sh --allow-cpu --max-examples 16
#
# Extra arguments go to cuda_check.py. Exit status: cuda_check.py's (0 ok, 1 a step failed, 2 no CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=${CARRY:-.devcarry}
SITE=${SITE:-/tmp/site}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cuda-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${SKIP_WHEELS:-0}" != 1 ]; then
    PIP=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
    "${PIP[@]}" "$CARRY"/whl/*.whl
    # datasets imports requests: install it (and its dependencies) only where the machine lacks it
    "$PY" -c "import requests" 2> /dev/null || "${PIP[@]}" "$CARRY"/whl/optional/*.whl
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# all-MiniLM-L6-v2 travels with fp16 weights: write model.safetensors in fp32 into a temp copy
cp -r "$CARRY/minilm" "$TMP/minilm"
"$PY" - "$TMP/minilm" << 'PYEOF'
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

folder = Path(sys.argv[1])
half = folder / "model.fp16.safetensors"
with safe_open(str(half), framework="pt") as handle:
    meta = handle.metadata()
    tensors = {k: handle.get_tensor(k) for k in handle.keys()}
fp32 = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
save_file(fp32, str(folder / "model.safetensors"), metadata=meta)
half.unlink()
print(f"restored {len(fp32)} tensors in fp32 into {folder}")
PYEOF

"$PY" bench/cuda_check.py --minilm "$TMP/minilm" --train-data "$CARRY/data/train.jsonl" \
    --raft-data "$CARRY/data/raft.jsonl" --raft-test "$CARRY/data/raft_test.jsonl" \
    --tokenizer "$CARRY/smollm2-tokenizer" --work "$TMP/work" "$@"

#!/usr/bin/env bash
# GPU check of the unsloth backend: builds models/demo-llm on one CUDA GPU through the workflow
# (no-LLM queries, mined negatives, extractive RAFT answers, 4-bit base + LoRA) within 8 minutes,
# then prints the loss curve, the held-out loss before/after and the adapter's size.
#
#   bash bench/gpu_check.sh                        # base llama3.2:3b -> unsloth/Llama-3.2-3B-Instruct-bnb-4bit
#   BASE=qwen2.5:0.5b EPOCHS=2 bash bench/gpu_check.sh
#   WS=/scratch/me/gpu-check bash bench/gpu_check.sh   # keep the workspace (default: a temp dir)
#
# Needs an NVIDIA GPU, the CUDA stack (`pip install -e ".[cuda]"`, or the envs/cuda.yaml env) and
# the base model's weights in the Hugging Face cache or reachable on the hub. Exit status: 0 when the
# adapter was built in time and reloads, non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${BASE:-llama3.2:3b}
EPOCHS=${EPOCHS:-1}
LIMIT_S=${LIMIT_S:-480}
WS=${WS:-$(mktemp -d "${TMPDIR:-/tmp}/ragd-gpu-check.XXXXXX")}
PY=${PYTHON:-python}

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed)" >&2
    exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: PyTorch sees no CUDA device; install the CUDA build (envs/cuda.yaml)" >&2
    exit 2
fi
if ! "$PY" -c "import unsloth" > /dev/null 2>&1; then
    echo "gpu_check: Unsloth is not installed: pip install -e '.[cuda]' (or use envs/cuda.yaml)" >&2
    exit 2
fi

mkdir -p "$WS"
cat > "$WS/gpu_check.yaml" << EOF
llm:
  backend: unsloth
  base_model: "$BASE"
  epochs: $EPOCHS
generate:
  query_generator: nollm
raft:
  answers: extractive
EOF
echo "gpu_check: workspace $WS, base $BASE, $EPOCHS epoch(s), limit ${LIMIT_S}s"
rm -rf "$WS/models/demo-llm"
start=$(date +%s)
status=0
timeout "$LIMIT_S" "$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory "$WS" --cores "$(nproc)" \
    --configfile "$ROOT/config/config.yaml" "$WS/gpu_check.yaml" -- models/demo-llm || status=$?
elapsed=$(($(date +%s) - start))
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && echo "gpu_check: FAILED, over ${LIMIT_S}s" >&2
    tail -n 40 "$WS"/logs/train_lora/demo.log 2> /dev/null || true
    echo "gpu_check: FAILED (exit $status after ${elapsed}s)" >&2
    exit 1
fi

"$PY" - "$WS/models/demo-llm" "$elapsed" << 'EOF'
import json
import sys
from pathlib import Path

folder, elapsed = Path(sys.argv[1]), int(sys.argv[2])
meta = json.loads((folder / "training_metadata.json").read_text())
history = meta["loss_history"]
print(f"\nloss curve ({len(history)} steps, {meta['device']}, base {meta['base_model_path']}):")
losses = [h["loss"] for h in history]
low, high = min(losses), max(losses)
every = max(1, len(history) // 40)
for h in history[::every] + ([history[-1]] if (len(history) - 1) % every else []):
    bar = "#" * (1 + round(49 * (h["loss"] - low) / ((high - low) or 1)))
    print(f"  step {h['step']:5d}  epoch {h['epoch']:5.2f}  loss {h['loss']:8.4f}  {bar}")
held = meta["held_out"]
print(f"held-out loss: {held['loss_before']} before, {held['loss_after']} after ({held['examples']} examples)")
adapter = meta["adapter"]
size = (folder / adapter["file"]).stat().st_size
print(f"adapter: {folder / adapter['file']}: {size / 2**20:.1f} MiB, {adapter['tensors']} tensors, "
      f"{adapter['parameters']:,} parameters")
print(f"training {meta['train_time_s']:.0f}s, GPU peak {meta.get('gpu_peak_memory_mb', '?')} MiB; "
      f"whole workflow {elapsed}s")
print(f"Ollama: {meta['ollama_create']}")
EOF
"$PY" - "$WS/models/demo-llm" << 'EOF'
import sys
from pathlib import Path

from safetensors.torch import load_file

folder = Path(sys.argv[1])
tensors = load_file(str(folder / "adapters.safetensors"))
trained = [n for n, t in tensors.items() if "lora_B" in n and float(t.float().abs().max()) > 0]
assert trained, "every lora_B tensor is zero: the adapter was not trained"
assert (folder / "adapter_config.json").exists() and (folder / "Modelfile").exists()
print(f"adapter reloads: {len(tensors)} tensors, {len(trained)} trained lora_B matrices")
EOF
echo "gpu_check: OK in ${elapsed}s"

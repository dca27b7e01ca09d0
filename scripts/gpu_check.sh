#!/usr/bin/env bash
# The GPU tier in one command, from anywhere: the CUDA tests (oracle in bf16, FlexAttention with gradients, the
# attention choice and its refusal, generation, short training runs), then the bench on Llama-3.2-1B's shape
# (random weights, SmolLM2's tokenizer: speed depends on the shape, not the weights) on GSM8K, per attention
# implementation; each stage timed. Logs and the bench's JSON go to OUT.
#
#   bash scripts/gpu_check.sh
#   # PYTHON=python3  DATA=path/to/gsm8k/train.jsonl  OUT=gpu_check_out  MODELS=/tmp/stepjepa-models
#   # GPU_KIT=../shared/gpu (make_models.py and SmolLM2's config)  ATTNS="auto sdpa"  STEPS=10  BATCH=16
#
# Runs every stage even when one fails; exits non-zero if any did.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
DATA="${DATA:-$ROOT/../shared/data/gsm8k/train.jsonl}"
GPU_KIT="${GPU_KIT:-$ROOT/../shared/gpu}"
OUT="${OUT:-$ROOT/gpu_check_out}"
MODELS="${MODELS:-/tmp/stepjepa-models}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
T0=$(date +%s)
stage() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
failed=0

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU visible to torch")' \
  || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

stage "CUDA tier"
(cd "$ROOT" && timeout 900 "$PYTHON" -m pytest -m cuda -p no:cacheprovider -o addopts="" -rA --durations=5 \
  tests/core/test_gpu.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -25; exit "${PIPESTATUS[0]}") || failed=1

stage "model llama-1b"
if [ ! -f "$MODELS/llama-1b/config.json" ]; then
  "$PYTHON" "$GPU_KIT/make_models.py" "$MODELS" llama-1b || failed=1
fi

for attn in ${ATTNS:-auto sdpa}; do
  stage "bench llama-1b --attn_implementation $attn"
  began=$(date +%s)
  (cd "$ROOT" && timeout 600 "$PYTHON" -m stepjepa bench --model_name "$MODELS/llama-1b" --data_file "$DATA" \
     --batch_size "${BATCH:-16}" --max_length 512 --steps "${STEPS:-10}" --warmup 3 --no_isolate \
     --modes regular,llm_jepa,step_jepa,step_jepa_multipass --attn_implementation "$attn" \
     --output "$OUT/bench_llama-1b_$attn.json" 2>&1 | tee "$OUT/bench_llama-1b_$attn.log" | tail -12
   exit "${PIPESTATUS[0]}") || failed=1
  echo "bench $attn: $(( $(date +%s) - began )) s"
done

stage "end (failed: $failed)"
exit "$failed"

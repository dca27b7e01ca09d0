#!/usr/bin/env bash
# The GPU tier in one command, from anywhere: the CUDA tests (oracle in bf16, flex attention with gradients,
# generation, short training runs), then the bench of the embedded model on GSM8K.
#
#   bash scripts/gpu_check.sh            # DATA=path/to/gsm8k/train.jsonl  OUTPUT=gpu_bench.json  STEPS=20
#
# Stops at the first failure. PYTHON may name the interpreter (default: python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
DATA="${DATA:-$ROOT/../shared/data/gsm8k/train.jsonl}"

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU visible to torch")'
(cd "$ROOT" && "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider tests/test_gpu.py)
"$PYTHON" -m stepjepa bench --data_file "$DATA" --batch_size 4 --max_length 512 --steps "${STEPS:-20}" \
  --modes regular,llm_jepa,step_jepa,step_jepa_multipass,llm_jepa_multipass --output "${OUTPUT:-gpu_bench.json}"

#!/usr/bin/env bash
# Step-JEPA fine-tuning with the options guide's defaults (K=0, lambda 0.1, cosine loss, LoRA rank 16, seed 42).
#
#   bash scripts/train_adapted.sh [more finetune_step_jepa_adapted.py flags, e.g. --max_steps 100]
#
# TRAIN_FILE, OUTPUT_DIR, MODEL_NAME and PYTHON may be set in the environment. Relative paths
# are read from the directory you run the script in. For every option, see train_adapted_full.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TRAIN_FILE="${TRAIN_FILE:-./gsm8k_step_jepa.jsonl}"
OUTPUT_DIR="${OUTPUT_DIR:-./checkpoints_step_jepa}"
# The embedded SmolLM2-135M-Instruct needs no download; e.g. meta-llama/Llama-3.2-1B-Instruct for the guide's model.
MODEL_NAME="${MODEL_NAME:-smollm2-135m-instruct}"

"${PYTHON:-python}" "$ROOT/finetune_step_jepa_adapted.py" \
  --train_file "$TRAIN_FILE" \
  --output_dir "$OUTPUT_DIR" \
  --model_name "$MODEL_NAME" \
  --step_jepa \
  --lora \
  "$@"

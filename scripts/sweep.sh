#!/usr/bin/env bash
# The options guide's Example 4: Step-JEPA over seeds x lambda, one output directory per run.
#
#   bash scripts/sweep.sh [more finetune_step_jepa_adapted.py flags for every run, e.g. --max_steps 100]
#
# SEEDS, LBDS, TRAIN_FILE, OUTPUT_PREFIX, MODEL_NAME and PYTHON may be set in the environment.
# Started again, it skips runs that finished (their train_summary.json exists) and redoes a
# half-finished one. `stepjepa sweep` does the same grid with evaluation, a ledger and modes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SEEDS="${SEEDS:-82 23 37 84 4}"
LBDS="${LBDS:-0.1 0.5 2.0}"
TRAIN_FILE="${TRAIN_FILE:-./gsm8k_step_jepa.jsonl}"
OUTPUT_PREFIX="${OUTPUT_PREFIX:-./checkpoints_sweep}"
MODEL_NAME="${MODEL_NAME:-smollm2-135m-instruct}"

for seed in $SEEDS; do
  for lbd in $LBDS; do
    out="${OUTPUT_PREFIX}_seed${seed}_lbd${lbd}"
    if [[ -f "$out/train_summary.json" ]]; then
      echo "skip $out: finished"
      continue
    fi
    # A directory without train_summary.json is an interrupted run: train it again from the start.
    overwrite=()
    [[ -d "$out" ]] && overwrite=(--overwrite_output_dir)
    "${PYTHON:-python}" "$ROOT/finetune_step_jepa_adapted.py" \
      --train_file "$TRAIN_FILE" \
      --output_dir "$out" \
      --model_name "$MODEL_NAME" \
      --step_jepa \
      --lbd "$lbd" \
      --finetune_seed "$seed" \
      --lora \
      ${overwrite[@]+"${overwrite[@]}"} \
      "$@"
  done
done

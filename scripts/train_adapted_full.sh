#!/usr/bin/env bash
# Every option of the options guide in one configuration block: edit it, or set any of its
# variables in the environment (MODE=regular bash scripts/train_adapted_full.sh).
#
#   bash scripts/train_adapted_full.sh [more finetune_step_jepa_adapted.py flags, e.g. --max_steps 100]
#
# Relative paths are read from the directory you run the script in.
set -euo pipefail

# ---- configuration ----------------------------------------------------------------------------
MODE="${MODE:-step_jepa}"          # regular (LM only) | jepa (LLM-JEPA, Text <-> Code) | step_jepa (Step 1 <-> Step 2)
LBD="${LBD:-0.1}"                  # JEPA loss weight lambda: 0.1 light, 0.5 medium, 2.0 strong
GAMMA="${GAMMA:-1.0}"              # LM loss weight gamma
PREDICTORS="${PREDICTORS:-0}"      # K predictor tokens <|predictor_1..K|> (the paper's K is 2)
LAST_TOKEN="${LAST_TOKEN:-auto}"   # LLM-JEPA embedding token from a view's end: auto, or Llama/Gemma -2, Qwen -3, OpenELM -4
JEPA_RATIO="${JEPA_RATIO:--1.0}"   # probability of the JEPA term per batch (<= 0: always)
LOSS="${LOSS:-cosine}"             # cosine | l2 | mse | infonce
LORA="${LORA:-1}"                  # 1: LoRA fine-tuning, 0: full fine-tuning
LORA_RANK="${LORA_RANK:-16}"
SEED="${SEED:-42}"                 # the original run.sh used 82 23 37 84 4
DEBUG="${DEBUG:-5}"                # 0 quiet, 1 basic, 5 losses, 7 print the first batch's layout and exit
TRAIN_FILE="${TRAIN_FILE:-./gsm8k_step_jepa.jsonl}"
OUTPUT_DIR="${OUTPUT_DIR:-./checkpoints_${MODE}}"
MODEL_NAME="${MODEL_NAME:-smollm2-135m-instruct}"  # embedded, no download; or meta-llama/Llama-3.2-1B-Instruct
PYTHON="${PYTHON:-python}"
# ------------------------------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() { echo "train_adapted_full.sh: $*" >&2; exit 2; }

case "$MODE" in
  regular)   FLAGS=(--regular) ;;
  jepa)      FLAGS=() ;;
  step_jepa) FLAGS=(--step_jepa) ;;
  *)         fail "MODE must be regular, jepa or step_jepa, got '$MODE'" ;;
esac
case "$LOSS" in
  cosine)  LOSS_FLAGS=() ;;
  l2)      LOSS_FLAGS=(--jepa_l2) ;;
  mse)     LOSS_FLAGS=(--jepa_mse) ;;
  infonce) LOSS_FLAGS=(--infonce) ;;
  *)       fail "LOSS must be cosine, l2, mse or infonce, got '$LOSS'" ;;
esac
# Regular training has no JEPA term: the trainer refuses JEPA options with --regular.
if [[ "$MODE" != regular ]]; then
  FLAGS+=(--predictors "$PREDICTORS" --lbd "$LBD" --gamma "$GAMMA" --last_token "$LAST_TOKEN"
          --jepa_ratio "$JEPA_RATIO" ${LOSS_FLAGS[@]+"${LOSS_FLAGS[@]}"})
fi
case "$LORA" in
  1) FLAGS+=(--lora --lora_rank "$LORA_RANK") ;;
  0) ;;
  *) fail "LORA must be 1 or 0, got '$LORA'" ;;
esac

COMMAND=("$PYTHON" "$ROOT/finetune_step_jepa_adapted.py"
  --train_file "$TRAIN_FILE" --output_dir "$OUTPUT_DIR" --model_name "$MODEL_NAME"
  "${FLAGS[@]}" --finetune_seed "$SEED" --debug "$DEBUG" "$@")
echo "+ ${COMMAND[*]}"
"${COMMAND[@]}"

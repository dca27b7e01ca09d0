#!/usr/bin/env bash
# The LLM-JEPA paper's GSM8K protocol on a CUDA machine, as one resumable command:
# Llama-3.2-1B-Instruct, 5 seeds, regular vs LLM-JEPA vs Step-JEPA, full fine-tuning, the full GSM8K test set
# (1,319 problems), then the report (accuracy mean ± std, paired t-tests, the held-out JEPA probe).
#
#   GSM8K_DIR=/data/gsm8k bash scripts/paper_gsm8k.sh
#
# GSM8K_DIR holds train.jsonl and test.jsonl as published ({question, answer with '#### N'}).
# MODEL may be a hub id (needs network or a warm HF cache) or a local directory. SEEDS, EPOCHS, LR, BATCH,
# K_LLM, LBD_LLM, K_STEP, LBD_STEP and OUT may be set. Rerunning skips finished runs (the sweep's ledger).
# The defaults are the options guide's: K=2 predictors; lambda 0.5 for LLM-JEPA (the guide's "Original JEPA
# with predictors") and 0.1 for Step-JEPA; seeds 82 23 37 84 4 (the original run.sh).
#
# Estimate (not measured; a CUDA machine was not available when this was written): a 1B model in bf16 on one
# H100 takes roughly 0.15 s per step of 4 examples x ~300 tokens, 1,868 steps an epoch: ~5 min per epoch for
# regular, ~1.2x for Step-JEPA, ~2x for LLM-JEPA. With 4 epochs and 5 seeds: ~7 GPU hours of training; the
# evaluations (15 runs + base, 1,319 problems, 512 new tokens, batch 64) ~1.5 hours; about 9 H100 hours in all.
set -euo pipefail
cd "$(dirname "$0")/.."
GSM8K_DIR=${GSM8K_DIR:?set GSM8K_DIR to a folder with GSM8K train.jsonl and test.jsonl}
MODEL=${MODEL:-meta-llama/Llama-3.2-1B-Instruct}
SEEDS=${SEEDS:-82 23 37 84 4}
EPOCHS=${EPOCHS:-4}
LR=${LR:-2e-5}
BATCH=${BATCH:-4}
K_LLM=${K_LLM:-2}; LBD_LLM=${LBD_LLM:-0.5}
K_STEP=${K_STEP:-2}; LBD_STEP=${LBD_STEP:-0.1}
OUT=${OUT:-runs/paper_gsm8k}

mkdir -p "$OUT/data"
[ -f "$OUT/data/train.jsonl" ] || stepjepa prepare --format gsm8k --input "$GSM8K_DIR/train.jsonl" --output "$OUT/data/train.jsonl"
[ -f "$OUT/data/test_chat.jsonl" ] || stepjepa prepare --format gsm8k --input "$GSM8K_DIR/test.jsonl" --output "$OUT/data/test_chat.jsonl"
TRAIN_ARGS="--num_epochs $EPOCHS --learning_rate $LR --batch_size $BATCH --max_length 512 --bf16 --logging_steps 20 --save_steps 1000 --debug 1"
common=(--seeds $SEEDS --model_name "$MODEL" --train_file "$OUT/data/train.jsonl" --test_file "$GSM8K_DIR/test.jsonl"
        --probe_file "$OUT/data/test_chat.jsonl" --output_dir "$OUT/sweep" --train_args "$TRAIN_ARGS"
        --eval_args "--max_new_tokens 512 --batch_size 64 --bf16" --probe_args "--bf16 --batch_size 32")
# One ledger, two sweeps: each JEPA mode with its own lambda and K; regular and the base model run once.
stepjepa sweep --modes regular llm_jepa --lbd "$LBD_LLM" --predictors "$K_LLM" "${common[@]}"
stepjepa sweep --modes regular step_jepa --lbd "$LBD_STEP" --predictors "$K_STEP" "${common[@]}"
stepjepa report "$OUT/sweep"

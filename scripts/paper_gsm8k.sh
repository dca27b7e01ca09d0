#!/usr/bin/env bash
# The LLM-JEPA paper's GSM8K protocol on a CUDA machine, as one resumable command:
# Llama-3.2-1B-Instruct, 5 seeds, regular vs LLM-JEPA vs Step-JEPA over a lambda axis, full fine-tuning, the
# full GSM8K test set (1,319 problems), then the report: accuracy mean ± std with each run's Wilson interval,
# paired t-tests against regular with their intervals and Holm's correction, a dose-response plot over lambda,
# how the generations ended (end of turn or the token cap), the collapse diagnostics logged while training,
# the held-out JEPA probe, and where the numbers came from (version, commit, machine, precision).
#
#   GSM8K_DIR=/data/gsm8k bash scripts/paper_gsm8k.sh
#   LBDS="0.1 0.5 2.0" GSM8K_DIR=/data/gsm8k bash scripts/paper_gsm8k.sh     # the options guide's lambda sweep
#   ESTIMATE_ONLY=1 GSM8K_DIR=/data/gsm8k bash scripts/paper_gsm8k.sh        # print the expected GPU-hours, run nothing
#
# GSM8K_DIR holds train.jsonl and test.jsonl as published ({question, answer with '#### N'}).
# MODEL may be a hub id (needs network or a warm HF cache) or a local directory. SEEDS, EPOCHS, LR, BATCH,
# K_LLM, K_STEP, LBDS (both JEPA modes' lambdas; LBDS_LLM and LBDS_STEP set one mode's), MAX_NEW_TOKENS,
# PRECISION (--bf16, or --no_bf16 for float32) and OUT may be set; SWEEP_ARGS adds `stepjepa sweep` flags
# (e.g. '--no_base' or '--max_examples 200'). Rerunning skips finished runs (the sweep's ledger).
# The defaults: lambda 0.5 for both JEPA modes (the paper's GSM8K setting), K=2 predictors (the options guide's),
# seeds 82 23 37 84 4 (the original run.sh).
#
# Estimate (not measured; no CUDA machine was available when this was written): a 1B model in bf16 on one
# H100 takes roughly 0.15 s per step of 4 examples x ~300 tokens, 1,868 steps an epoch: ~5 min per epoch for
# regular, ~1.2x for Step-JEPA, ~2x for LLM-JEPA; an evaluation of 1,319 problems (512 new tokens, batch 64)
# ~5.6 min. The script scales these by the data's size and the grid and prints the total before it starts:
# with the defaults 8.5 H100 hours; with LBDS="0.1 0.5 2.0" 21.0.
set -euo pipefail
cd "$(dirname "$0")/.."
GSM8K_DIR=${GSM8K_DIR:?set GSM8K_DIR to a folder with GSM8K train.jsonl and test.jsonl}
MODEL=${MODEL:-meta-llama/Llama-3.2-1B-Instruct}
SEEDS=${SEEDS:-82 23 37 84 4}
EPOCHS=${EPOCHS:-4}
LR=${LR:-2e-5}
BATCH=${BATCH:-4}
K_LLM=${K_LLM:-2}
K_STEP=${K_STEP:-2}
LBDS=${LBDS:-0.5}
LBDS_LLM=${LBDS_LLM:-$LBDS}
LBDS_STEP=${LBDS_STEP:-$LBDS}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-512}
PRECISION=${PRECISION:---bf16}
OUT=${OUT:-runs/paper_gsm8k}

for name in train test; do
  [ -f "$GSM8K_DIR/$name.jsonl" ] || { echo "paper_gsm8k.sh: $GSM8K_DIR/$name.jsonl: no such file" >&2; exit 2; }
done

# Expected GPU-hours: minutes per epoch of the full training split (7,473 problems) and per evaluation of the full
# test split (1,319), scaled by this data's rows and the grid (regular once per seed, each JEPA mode per lambda).
train_rows=$(wc -l < "$GSM8K_DIR/train.jsonl")
test_rows=$(wc -l < "$GSM8K_DIR/test.jsonl")
awk -v seeds="$(wc -w <<< "$SEEDS")" -v epochs="$EPOCHS" -v llm="$(wc -w <<< "$LBDS_LLM")" \
    -v step="$(wc -w <<< "$LBDS_STEP")" -v train="$train_rows" -v test="$test_rows" 'BEGIN {
  runs = seeds * (1 + llm + step)
  train_h = epochs * seeds * (5 + 10 * llm + 6 * step) * train / 7473 / 60
  eval_h = (1 + runs) * 5.6 * test / 1319 / 60
  printf "paper_gsm8k.sh: %d training runs (%d seeds; lambda %d x LLM-JEPA, %d x Step-JEPA; regular) and %d evaluations;\n",
         runs, seeds, llm, step, runs + 1
  printf "expected about %.1f H100 GPU-hours (training %.1f, evaluation %.1f; an estimate, not a measurement)\n",
         train_h + eval_h, train_h, eval_h
}'
[ "${ESTIMATE_ONLY:-0}" = 1 ] && exit 0

mkdir -p "$OUT/data"
[ -f "$OUT/data/train.jsonl" ] || stepjepa prepare --format gsm8k --input "$GSM8K_DIR/train.jsonl" --output "$OUT/data/train.jsonl"
[ -f "$OUT/data/test_chat.jsonl" ] || stepjepa prepare --format gsm8k --input "$GSM8K_DIR/test.jsonl" --output "$OUT/data/test_chat.jsonl"
# --logging_steps 20: every window logs the LM and JEPA losses and the collapse diagnostics to metrics.jsonl.
TRAIN_ARGS="--num_epochs $EPOCHS --learning_rate $LR --batch_size $BATCH --max_length 512 $PRECISION --logging_steps 20 --save_steps 1000 --debug 1"
common=(--seeds $SEEDS --model_name "$MODEL" --train_file "$OUT/data/train.jsonl" --test_file "$GSM8K_DIR/test.jsonl"
        --probe_file "$OUT/data/test_chat.jsonl" --output_dir "$OUT/sweep" --train_args "$TRAIN_ARGS"
        --eval_args "--max_new_tokens $MAX_NEW_TOKENS --batch_size 64 $PRECISION" --probe_args "$PRECISION --batch_size 32")
# One ledger, two sweeps: each JEPA mode over its lambdas with its own K; regular and the base model run once.
stepjepa sweep --modes regular llm_jepa --lbd $LBDS_LLM --predictors "$K_LLM" "${common[@]}" ${SWEEP_ARGS:-}
stepjepa sweep --modes regular step_jepa --lbd $LBDS_STEP --predictors "$K_STEP" "${common[@]}" ${SWEEP_ARGS:-}
stepjepa report "$OUT/sweep"

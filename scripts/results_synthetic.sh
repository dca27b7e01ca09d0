#!/usr/bin/env bash
# The first multi-seed comparison (docs/RESULTS.md): regular vs Step-JEPA LoRA fine-tunes of the embedded
# SmolLM2-135M-Instruct on synthetic 2-3 step problems, 3 seeds each, evaluated on 200 held-out problems and probed.
# Settings (LoRA lr 5e-4, 150 steps of 4) were chosen on a validation split (synthetic seed 7), not on this test
# split (synthetic seed 1). About an hour on a 2-core CPU with bf16; rerunning resumes (the sweep's ledger).
#   bash scripts/results_synthetic.sh            MODES="regular step_jepa llm_jepa" adds LLM-JEPA runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/results_synthetic}
MODES=${MODES:-regular step_jepa}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 2000 --synthetic_max_steps 3 --seed 1 --output "$RUN/data/synth.jsonl"
fi
stepjepa sweep --modes $MODES --seeds 82 23 37 --predictors 2 --lbd 0.1 \
  --train_file "$RUN/data/synth.jsonl" --test_file "$RUN/data/synth_test.jsonl" --output_dir "$RUN/sweep" \
  --train_args "--lora --learning_rate 5e-4 --max_steps 150 --batch_size 4 --max_length 256 --logging_steps 10 --debug 1" \
  --eval_args "--max_new_tokens 128 --batch_size 20"
stepjepa report "$RUN/sweep"

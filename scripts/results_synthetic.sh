#!/usr/bin/env bash
# The first multi-seed comparison (docs/RESULTS.md): regular vs Step-JEPA LoRA fine-tunes of the embedded
# SmolLM2-135M-Instruct on synthetic 2-3 step problems, 3 seeds each, evaluated on 200 held-out problems and probed.
# Settings (LoRA lr 5e-4, 100 steps of 4) were chosen on a validation split (synthetic seed 7), not on this test
# split (synthetic seed 1). One seed at a time (regular, then Step-JEPA), so the finished seeds are always pairs.
# Rerunning resumes (the sweep's ledger).
#   bash scripts/results_synthetic.sh            MODES="regular step_jepa llm_jepa" adds LLM-JEPA runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/results_synthetic}
MODES=${MODES:-regular step_jepa}
SEEDS=${SEEDS:-82 23 37}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 2000 --synthetic_max_steps 3 --seed 1 --output "$RUN/data/synth.jsonl"
fi
for seed in $SEEDS; do
  stepjepa sweep --modes $MODES --seeds "$seed" --predictors 2 --lbd 0.1 \
    --train_file "$RUN/data/synth.jsonl" --test_file "$RUN/data/synth_test.jsonl" --output_dir "$RUN/sweep" \
    --train_args "--lora --learning_rate 5e-4 --max_steps 100 --batch_size 4 --max_length 256 --logging_steps 10 --debug 1" \
    --eval_args "--max_new_tokens 100 --batch_size 20"
done
stepjepa report "$RUN/sweep"

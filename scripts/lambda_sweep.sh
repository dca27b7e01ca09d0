#!/usr/bin/env bash
# The options guide's Example 4 at the main job's scale (docs/RESULTS.md, "Does the JEPA term do anything"):
# Step-JEPA (K=2, cosine) at lambda 0.1, 0.5 and 2.0 against regular fine-tuning, seeds 82 23 37 84 4, the
# embedded SmolLM2-135M-Instruct with LoRA on synthetic 2-3 step problems (synthetic seed 1: 2000 to train and
# 200 held out), greedy evaluation on all 200 held-out problems (one problem = 0.5 points) and the probe on each
# run. Every setting but lambda and seed is the main job's, chosen on the validation split (synthetic seed 7);
# nothing was chosen on this test split (docs/RESULTS.md's 3-seed comparison reported on it, at lambda 0.1). One seed at a time, so finished seeds are always complete sets of four.
# About two hours on an idle 2-core CPU; rerunning resumes (the sweep's ledger). RUN=... picks another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/lambda_sweep}
SEEDS=${SEEDS:-82 23 37 84 4}
LBDS=${LBDS:-0.1 0.5 2.0}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 2000 --synthetic_max_steps 3 --seed 1 --output "$RUN/data/synth.jsonl"
fi
for seed in $SEEDS; do
  stepjepa sweep --modes regular step_jepa --seeds "$seed" --predictors 2 --lbd $LBDS \
    --train_file "$RUN/data/synth.jsonl" --test_file "$RUN/data/synth_test.jsonl" --output_dir "$RUN/sweep" \
    --train_args "--lora --learning_rate 5e-4 --max_steps 100 --batch_size 4 --max_length 256 --logging_steps 10 --debug 1" \
    --eval_args "--max_new_tokens 128 --batch_size 20"
done
stepjepa report "$RUN/sweep"

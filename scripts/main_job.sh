#!/usr/bin/env bash
# The main job: synthetic GSM8K-like data, then regular vs Step-JEPA LoRA fine-tunes of the embedded
# SmolLM2-135M-Instruct on this machine's CPU, each evaluated on held-out problems, and the report.
# Needs no network. Re-running it skips finished runs (the sweep's ledger); RUN=... picks another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/main}
STEPS=${STEPS:-20}
EXAMPLES=${EXAMPLES:-20}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 400 --seed 0 --output "$RUN/data/synth.jsonl"
fi
stepjepa validate "$RUN/data/synth.jsonl" --step_jepa
stepjepa sweep --modes regular step_jepa --seeds 42 --predictors 2 --lbd 0.1 \
  --train_file "$RUN/data/synth.jsonl" --test_file "$RUN/data/synth_test.jsonl" \
  --output_dir "$RUN/sweep" --max_examples "$EXAMPLES" \
  --train_args "--lora --max_steps $STEPS --batch_size 4 --max_length 384 --logging_steps 5 --debug 1" \
  --eval_args "--max_new_tokens 160 --batch_size 10"
stepjepa report "$RUN/sweep"
echo
echo "Step-JEPA model (LoRA merged): $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42"
echo "its LoRA adapter alone:        $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42/adapter"
echo "its metrics per step:          $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42/metrics.jsonl"
echo "regular baseline:              $RUN/sweep/regular_seed42"
echo "report (table and plots):      $RUN/sweep/report.md"

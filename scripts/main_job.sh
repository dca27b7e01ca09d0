#!/usr/bin/env bash
# The main job: synthetic GSM8K-like problems (2-3 reasoning steps), then on this machine's CPU the embedded
# SmolLM2-135M-Instruct untrained (base), fine-tuned regularly and fine-tuned with Step-JEPA (K=2, lambda 0.1),
# each evaluated on the 80 held-out problems and probed (held-out alignment of the Step-JEPA views), and the report.
# Needs no network. Re-running skips finished runs (the sweep's ledger); RUN=... picks another folder.
# The learning rate and step count were chosen on a validation split (seed 7), never on this test split: docs/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/main}
STEPS=${STEPS:-100}
EXAMPLES=${EXAMPLES:-80}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 800 --synthetic_max_steps 3 --seed 0 --output "$RUN/data/synth.jsonl"
fi
stepjepa validate "$RUN/data/synth.jsonl" --step_jepa
stepjepa sweep --modes regular step_jepa --seeds 42 --predictors 2 --lbd 0.1 \
  --train_file "$RUN/data/synth.jsonl" --test_file "$RUN/data/synth_test.jsonl" \
  --output_dir "$RUN/sweep" --max_examples "$EXAMPLES" \
  --train_args "--lora --learning_rate 5e-4 --max_steps $STEPS --batch_size 4 --max_length 256 --logging_steps 10 --debug 1" \
  --eval_args "--max_new_tokens 128 --batch_size 20"
stepjepa report "$RUN/sweep"
echo
echo "Step-JEPA model (LoRA merged): $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42"
echo "its LoRA adapter alone:        $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42/adapter"
echo "its metrics and probe:         $RUN/sweep/step_jepa_lbd0.1_k2_cosine_seed42/{metrics.jsonl,probe.json,probe.png}"
echo "regular baseline:              $RUN/sweep/regular_seed42"
echo "base model's results:          $RUN/sweep/base"
echo "report (tables and plots):     $RUN/sweep/report.md"
echo "the published run of this job:  README.md, \"Results of the main job\" (how to read the tables)"

#!/usr/bin/env bash
# The main job: synthetic GSM8K-like data, then a short Step-JEPA LoRA fine-tune of the embedded
# SmolLM2-135M-Instruct on this machine's CPU. Needs no network. Re-running it replaces its own outputs only.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/main}
STEPS=${STEPS:-30}
mkdir -p "$RUN/data"
if [ ! -f "$RUN/data/synth.jsonl" ]; then
  stepjepa prepare --synthetic 400 --seed 0 --output "$RUN/data/synth.jsonl"
fi
stepjepa validate "$RUN/data/synth.jsonl" --step_jepa
python finetune_step_jepa_adapted.py \
  --train_file "$RUN/data/synth.jsonl" \
  --output_dir "$RUN/step_jepa" --overwrite_output_dir \
  --step_jepa --predictors 2 --lbd 0.1 \
  --lora --lora_rank 16 \
  --max_steps "$STEPS" --batch_size 4 --logging_steps 5 --max_length 384 \
  --finetune_seed 42 --debug 5
echo
echo "model (LoRA merged):   $RUN/step_jepa"
echo "LoRA adapter alone:    $RUN/step_jepa/adapter"
echo "metrics per step:      $RUN/step_jepa/metrics.jsonl"
tail -n 3 "$RUN/step_jepa/metrics.jsonl"

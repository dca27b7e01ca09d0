"""A thin transformers Trainer: the packed objective as ``compute_loss``, LM/JEPA metrics in ``log``."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from stepjepa.core.layout import draw_one_pair_per_row, select_pairs
from stepjepa.core.objective import LossScale, Objective, compute_objective
from stepjepa.data import append_jsonl, give_plain_modes
from stepjepa.training.checkpoints import mark_complete, rotate

SUM_COLUMNS = 5  # per step: LM loss sum, labelled tokens, JEPA loss sum, pairs, conversation tokens


class NonFiniteLoss(Exception):
    """A training loss came out NaN or infinite: the message names the step and the term."""


class JepaTrainer(Trainer):
    """Trainer whose loss is ``gamma * LM + lbd * JEPA`` from one packed forward pass.

    With a ``run_record`` every checkpoint is marked whole once saved, and only this run's checkpoints beyond
    the newest ``save_total_limit`` are deleted (0 keeps all).
    """

    # compute_loss returns each micro-batch's share of the whole step's token- and pair-weighted loss: the
    # Trainer must not divide it by the accumulation steps again.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, objective: Objective, jepa_ratio: float = -1.0, one_pair_per_example: bool = False,
                 debug: int = 0, run_record: dict | None = None, save_total_limit: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.jepa_ratio = jepa_ratio
        self.one_pair_per_example = one_pair_per_example  # --step_pairs random
        self.debug = debug
        self.run_record = run_record
        self.save_total_limit = save_total_limit
        # The Trainer counts each optimizer step's labelled tokens over its micro-batches and ranks
        # (num_items_in_batch) only for models that take loss kwargs; compute_loss divides by that count.
        self.model_accepts_loss_kwargs = True
        # split -> optimizer step -> [LM loss sum, labelled tokens, JEPA loss sum, pairs, conversation tokens]
        self._sums: dict[str, defaultdict] = {split: defaultdict(lambda: [0.0] * SUM_COLUMNS)
                                              for split in ("train", "eval")}
        self._step_scale: LossScale | None = None  # the current optimizer step's divisors (get_batch_samples)
        self._announced = False
        self._last_log_time = time.perf_counter()

    def _draw_jepa(self, micro: int) -> bool:
        """Random JEPA-loss dropout: with ``0 < jepa_ratio < 1`` a batch gets the JEPA term with that probability.

        The draw depends on (seed, step, micro-batch index) only, so every rank draws alike and a resumed run
        draws what the uninterrupted one did.
        """
        if not 0 < self.jepa_ratio < 1:
            return True
        rng = random.Random(f"{self.args.seed}:{self.state.global_step}:{micro}")
        return rng.random() < self.jepa_ratio

    def _pairs_trained(self, batch: dict) -> int:
        """The JEPA pairs a micro-batch trains: all of them, or one per example with ``--step_pairs random``."""
        if self.objective.mode == "regular":
            return 0
        if self.one_pair_per_example:
            return len(set(batch["pair_example"].tolist()))
        return len(batch["pair_row"])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, each told whether it computes the JEPA term, and the step's divisors:
        its labelled tokens (the Trainer's ``num_items_in_batch``) and JEPA pairs, both over every rank."""
        batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batches:  # the data ran out (a stream's epoch ends): no step to scale
            return batches, num_items_in_batch
        pairs = 0
        for micro, batch in enumerate(batches):
            batch["use_jepa"] = self._draw_jepa(micro)
            pairs += self._pairs_trained(batch) if batch["use_jepa"] else 0
        pairs = torch.tensor(float(pairs), device=device)
        if self.args.world_size > 1:
            pairs = self.accelerator.reduce(pairs, reduction="sum")
        self._step_scale = LossScale(float(num_items_in_batch), float(pairs), self.accelerator.num_processes)
        return batches, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: this micro-batch's share of the step's loss (:class:`LossScale`); evaluation: its own means."""
        split = "train" if model.training else "eval"
        use_jepa = inputs["use_jepa"] if split == "train" else True
        if use_jepa and self.one_pair_per_example and len(inputs["pair_row"]):
            keep = draw_one_pair_per_row(inputs, self.args.seed, self.state.global_step)
            inputs = select_pairs(inputs, keep, self.processing_class.pad_token_id)
        scale = self._step_scale if split == "train" else None
        out = compute_objective(model, inputs, self.objective, use_jepa=use_jepa, scale=scale)
        if split == "train" and not self._announced and self.state.global_step == 0:
            self._announced = True
            self._announce_first_batch(inputs)
        lm = out.lm_loss.item()
        jepa = out.jepa_loss.item() if out.jepa_loss is not None else None
        if split == "train":
            self._check_finite(lm, jepa, out.loss.item())
        # Per optimizer step, token- and pair-weighted sums (over micro-batches, then ranks): a step's logged
        # means are those its loss was made of. Evaluation is one "step".
        sums = self._sums[split][self.state.global_step if split == "train" else 0]
        sums[0] += lm * out.lm_tokens
        sums[1] += out.lm_tokens
        if jepa is not None:
            sums[2] += jepa * out.pairs
            sums[3] += out.pairs
        sums[4] += int(inputs["num_tokens"])
        return (out.loss, {"loss": out.loss}) if return_outputs else out.loss

    def _check_finite(self, lm: float, jepa: float | None, total: float) -> None:
        """Stop before a NaN or infinite loss reaches the weights, naming the step and the term that broke."""
        step = self.state.global_step + 1
        for term, value in (("LM", lm), ("JEPA", jepa), ("weighted (gamma * LM + lbd * JEPA)", total)):
            if value is not None and not math.isfinite(value):
                raise NonFiniteLoss(f"step {step}: the {term} loss is {value}")

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.run_record is None or not self.args.should_save:
            return
        checkpoint = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        give_plain_modes(checkpoint)
        mark_complete(checkpoint, self.run_record)
        rotate(self.args.output_dir, self.run_record, self.save_total_limit, checkpoint)

    def _announce_first_batch(self, inputs) -> None:
        """--debug >= 1 with several processes: each rank names its first batch (they must differ)."""
        if self.debug >= 1 and self.args.world_size > 1:
            ids = inputs["input_ids"]
            print(f"rank {self.args.process_index}/{self.args.world_size}: first batch {tuple(ids.shape)}, "
                  f"token-id sum {int(ids.sum())}", flush=True)

    def _period_means(self, split: str) -> tuple[float | None, float | None, float]:
        """This log period's LM and JEPA losses (each step's token- and pair-weighted means over all processes,
        averaged over the period's steps, as the Trainer averages ``loss``) and its conversation tokens.
        Every rank calls ``log``, with the same steps."""
        steps = self._sums[split]
        values = torch.tensor([steps[step] for step in sorted(steps)], dtype=torch.float64,
                              device=self.args.device).reshape(-1, SUM_COLUMNS)  # (steps, SUM_COLUMNS)
        if self.args.world_size > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        steps.clear()
        lm_sum, lm_tokens, jepa_sum, pairs, tokens = values.T
        lm = (lm_sum[lm_tokens > 0] / lm_tokens[lm_tokens > 0]).mean().item() if (lm_tokens > 0).any() else None
        jepa = (jepa_sum[pairs > 0] / pairs[pairs > 0]).mean().item() if (pairs > 0).any() else None
        return lm, jepa, tokens.sum().item()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        if split == "train" and "loss" not in logs:
            return super().log(logs, start_time)
        lm, jepa, tokens = self._period_means(split)
        prefix = "eval_" if split == "eval" else ""
        if lm is not None:
            logs[f"{prefix}lm_loss"] = round(lm, 6)
            # No JEPA pair in the window: no value (metrics.jsonl writes null; trackers take numbers only).
            if jepa is not None:
                logs[f"{prefix}jepa_loss"] = round(jepa, 6)
        if split == "train":
            now = time.perf_counter()
            logs["tokens_per_s"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._last_log_time = now
        super().log(logs, start_time)


class QuietProgressCallback(ProgressCallback):
    """The progress bar without the per-log dictionaries (debug levels 1-4)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def _strict(value):
    """A value strict JSON can hold: NaN and infinities become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFileCallback(TrainerCallback):
    """Appends one whole JSON line per logged training step to ``metrics.jsonl`` (eval to ``eval_metrics.jsonl``).

    The run's last step is always logged, its window shorter than ``--logging_steps`` or not.
    """

    TRAIN_KEYS = ("lm_loss", "jepa_loss", "loss", "grad_norm", "learning_rate", "tokens_per_s")

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def on_step_end(self, args, state, control, **kwargs):
        # Runs after DefaultFlowCallback, which flags the last step (or the signal handler, an interrupted one).
        if control.should_training_stop:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs and "lm_loss" in logs:
            row = {"step": state.global_step, **{key: _strict(logs.get(key)) for key in self.TRAIN_KEYS}}
            append_jsonl(f"{self.output_dir}/metrics.jsonl", row)
        elif "eval_loss" in logs:
            row = {"step": state.global_step, **{k: _strict(v) for k, v in logs.items() if k.startswith("eval_")}}
            if "eval_lm_loss" in row:
                row.setdefault("eval_jepa_loss", None)
            append_jsonl(f"{self.output_dir}/eval_metrics.jsonl", row)


def trainable_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())

"""A thin transformers Trainer: the packed objective as ``compute_loss``, LM/JEPA metrics and the view embeddings'
collapse diagnostics (stepjepa.core.diagnostics) in ``log``."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from stepjepa.core.diagnostics import COLLAPSE_KEYS, collapse_statistics, collapse_sums, collapse_sums_width
from stepjepa.core.layout import draw_one_pair_per_row, select_pairs
from stepjepa.core.objective import LossScale, Objective, compute_objective
from stepjepa.core.tokenization import IGNORE_INDEX
from stepjepa.data import append_jsonl, give_plain_modes
from stepjepa.training.checkpoints import mark_complete, mark_incomplete, rotate
from stepjepa.training.rundir import RunDir

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
        # split -> the log window's collapse_sums of the JEPA pairs, kept on the device until the window is logged
        self._collapse: dict[str, torch.Tensor | None] = {"train": None, "eval": None}
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
            if "pair_examples" in batch:
                return batch["pair_examples"]
            return len(set(batch["pair_row"].tolist()))
        return len(batch["pair_row"])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The step's micro-batches, each told whether it computes the JEPA term, and the step's divisors:
        its labelled tokens (the Trainer's ``num_items_in_batch``) and JEPA pairs, both over every rank. Counted
        from the collator's host integers: nothing is read back from the device (but one reduction with DDP)."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:  # the data ran out (a stream's epoch ends)
                break
        if not batches:
            return batches, None
        tokens = pairs = 0
        for micro, batch in enumerate(batches):
            batch["use_jepa"] = self._draw_jepa(micro)
            pairs += self._pairs_trained(batch) if batch["use_jepa"] else 0
            tokens += _labelled_tokens(batch)
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(torch.tensor([tokens, pairs], dtype=torch.float64, device=device),
                                             reduction="sum")
            tokens, pairs = counts.tolist()
        self._step_scale = LossScale(float(tokens), float(pairs), self.accelerator.num_processes)
        return batches, torch.tensor(float(tokens))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: this micro-batch's share of the step's loss (:class:`LossScale`); evaluation: its own means.
        The losses stay on the device: their sums are read (and checked finite) when logged or saved."""
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
        # Per optimizer step, token- and pair-weighted sums (over micro-batches, then ranks): a step's logged
        # means are those its loss was made of. Evaluation is one "step".
        sums = self._sums[split][self.state.global_step if split == "train" else 0]
        sums[0] = sums[0] + out.lm_loss.detach().double() * out.lm_tokens
        sums[1] += out.lm_tokens
        if out.jepa_loss is not None:
            sums[2] = sums[2] + out.jepa_loss.detach().double() * out.pairs
            sums[3] += out.pairs
        sums[4] += int(inputs["num_tokens"])
        if out.view_a is not None:
            # The embeddings the loss used, detached: statistics of the window, no extra forward.
            batch_sums = collapse_sums(out.view_a, out.view_b)
            window = self._collapse[split]
            self._collapse[split] = batch_sums if window is None else window + batch_sums
        return (out.loss, {"loss": out.loss}) if return_outputs else out.loss

    def _check_finite(self, steps: list[int], values: torch.Tensor, loss: float | None = None) -> None:
        """Stop on a NaN or infinite loss, naming the first step and term that broke; ``values``: the steps'
        sums ``(steps, SUM_COLUMNS)`` on the host, ``loss``: the Trainer's logged (weighted) loss."""
        message = first_non_finite(steps, values)
        if message is None and loss is not None and not math.isfinite(loss):
            message = f"step {self.state.global_step}: the weighted (gamma * LM + lbd * JEPA) loss is {loss}"
        if message:
            raise NonFiniteLoss(message)

    def _save_checkpoint(self, model, trial) -> None:
        # Steps not yet logged are checked first: a checkpoint never holds weights a non-finite loss updated.
        steps = sorted(self._sums["train"])
        self._check_finite(steps, stacked_sums([self._sums["train"][step] for step in steps], "cpu"))
        run = RunDir(self.args.output_dir)
        checkpoint = run.checkpoint(self.state.global_step)
        marking = self.run_record is not None and self.args.should_save
        if marking:
            mark_incomplete(checkpoint)  # saved over a whole one: incomplete until every file is new
        with run.saving(checkpoint, checkpoint.name):
            super()._save_checkpoint(model, trial)
        if not marking:
            return
        give_plain_modes(checkpoint)
        mark_complete(checkpoint, self.run_record)
        rotate(self.args.output_dir, self.run_record, self.save_total_limit, checkpoint)

    def _announce_first_batch(self, inputs) -> None:
        """--debug >= 1 with several processes: each rank names its first batch (they must differ)."""
        if self.debug >= 1 and self.args.world_size > 1:
            ids = inputs["input_ids"]
            print(f"rank {self.args.process_index}/{self.args.world_size}: first batch {tuple(ids.shape)}, "
                  f"token-id sum {int(ids.sum())}", flush=True)

    def _period_means(self, split: str, loss: float | None = None) -> tuple[float | None, float | None, float]:
        """This log period's LM and JEPA losses (each step's token- and pair-weighted means over all processes,
        averaged over the period's steps, as the Trainer averages ``loss``) and its conversation tokens.
        Every rank calls ``log``, with the same steps. Training: a non-finite loss raises :class:`NonFiniteLoss`."""
        steps = self._sums[split]
        order = sorted(steps)
        values = stacked_sums([steps[step] for step in order], self.args.device)  # (steps, SUM_COLUMNS)
        if self.args.world_size > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        values = values.cpu()  # the one read-back of the period
        steps.clear()
        if split == "train":
            self._check_finite(order, values, loss)
        lm_sum, lm_tokens, jepa_sum, pairs, tokens = values.T
        lm = (lm_sum[lm_tokens > 0] / lm_tokens[lm_tokens > 0]).mean().item() if (lm_tokens > 0).any() else None
        jepa = (jepa_sum[pairs > 0] / pairs[pairs > 0]).mean().item() if (pairs > 0).any() else None
        return lm, jepa, tokens.sum().item()

    def _period_collapse(self, split: str) -> dict[str, float]:
        """This log period's collapse statistics over all processes' JEPA pairs (:mod:`stepjepa.core.diagnostics`);
        those without enough pairs are left out. The one read-back of the window's sums happens here."""
        window, self._collapse[split] = self._collapse[split], None
        if self.args.world_size > 1 and self.objective.mode != "regular":
            if window is None:  # every rank reduces, with pairs of its own or not: zeros of the same shape
                width = self.model.get_input_embeddings().embedding_dim
                window = torch.zeros(collapse_sums_width(width), device=self.args.device)
            window = self.accelerator.reduce(window, reduction="sum")
        if window is None:
            return {}
        return {key: value for key, value in collapse_statistics(window).items() if value is not None}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        if split == "train" and "loss" not in logs:
            return super().log(logs, start_time)
        lm, jepa, tokens = self._period_means(split, logs.get("loss"))
        prefix = "eval_" if split == "eval" else ""
        if lm is not None:
            logs[f"{prefix}lm_loss"] = round(lm, 6)
            # No JEPA pair in the window: no value (metrics.jsonl writes null; trackers take numbers only).
            if jepa is not None:
                logs[f"{prefix}jepa_loss"] = round(jepa, 6)
        for key, value in self._period_collapse(split).items():
            logs[f"{prefix}{key}"] = round(value, 6)
        if split == "train":
            now = time.perf_counter()
            logs["tokens_per_s"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._last_log_time = now
        super().log(logs, start_time)


def stacked_sums(rows: list[list], device) -> torch.Tensor:
    """``(steps, SUM_COLUMNS)`` float64 on ``device`` from per-step lists of numbers and 0-dim tensors."""
    if not rows:
        return torch.zeros((0, SUM_COLUMNS), dtype=torch.float64, device=device)
    return torch.stack([torch.stack([torch.as_tensor(value, dtype=torch.float64, device=device) for value in row])
                        for row in rows])


def first_non_finite(steps: list[int], values: torch.Tensor) -> str | None:
    """The first of ``steps`` (optimizer steps, counted from 0) whose LM or JEPA mean in ``values``
    ``(steps, SUM_COLUMNS)`` is NaN or infinite, as "step N: the LM loss is nan" (N counted from 1); else None."""
    for step, (lm_sum, lm_tokens, jepa_sum, pairs, _) in zip(steps, values.tolist()):
        for term, total, count in (("LM", lm_sum, lm_tokens), ("JEPA", jepa_sum, pairs)):
            if count > 0 and not math.isfinite(total / count):
                return f"step {step + 1}: the {term} loss is {total / count}"
    return None


def _labelled_tokens(batch: dict) -> int:
    """A micro-batch's labelled tokens: the collator's host count, else counted from its labels (a read-back)."""
    if "lm_tokens" in batch:
        return batch["lm_tokens"]
    return int((batch["labels"] != IGNORE_INDEX).sum())


class QuietProgressCallback(ProgressCallback):
    """The progress bar without the per-log dictionaries (debug levels 1-4)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


def _strict(value):
    """A value strict JSON can hold: NaN and infinities become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFileCallback(TrainerCallback):
    """Appends one whole JSON line per logged training step to ``metrics.jsonl`` (eval to ``eval_metrics.jsonl``).

    The run's last step is always logged, its window shorter than ``--logging_steps`` or not. The collapse
    diagnostics (:data:`COLLAPSE_KEYS`) follow in the rows of windows that had JEPA pairs.
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
            row.update({key: _strict(logs[key]) for key in COLLAPSE_KEYS if key in logs})
            append_jsonl(RunDir(self.output_dir).metrics, row)
        elif "eval_loss" in logs:
            row = {"step": state.global_step, **{k: _strict(v) for k, v in logs.items() if k.startswith("eval_")}}
            if "eval_lm_loss" in row:
                row.setdefault("eval_jepa_loss", None)
            append_jsonl(RunDir(self.output_dir).eval_metrics, row)


def trainable_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())

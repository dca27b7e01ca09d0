"""A training run's output directory: refusing to overwrite, finding the checkpoint to resume, trimming metrics
past it, stopping on a signal, and saving the model, adapter and config."""

from __future__ import annotations

import json
import signal
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from stepjepa.core.errors import UsageError
from stepjepa.training.rundir import RunDir

if TYPE_CHECKING:
    from stepjepa.training.config import TrainConfig


def check_output_dir(cfg: TrainConfig) -> None:
    """Never delete or empty a directory; refuse a non-empty one unless told to overwrite or resume."""
    path = Path(cfg.output_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output_dir {path} exists and is not a directory")
    # The lock file alone (rank 0 of this very run, or a dead run's) does not make a directory "not empty".
    if path.is_dir() and any(p.name != RunDir.LOCK for p in path.iterdir()) and not (
            cfg.overwrite_output_dir or cfg.resume_from_checkpoint):
        raise UsageError(
            f"--output_dir {path} is not empty; pass --overwrite_output_dir, --resume_from_checkpoint, or another directory"
        )


def check_inputs_apart(cfg: TrainConfig) -> None:
    """Refuse, before anything is written, a run whose model or data lies in (or is) its own --output_dir: an
    overwritten run directory loses those files (the base model's weights, a training file named metrics.jsonl)."""
    from stepjepa.data.files import check_outputs_apart

    inputs = {"--model_name": cfg.model_name, "--train_file": cfg.train_file, "--eval_file": cfg.eval_file}
    check_outputs_apart({"--output_dir": cfg.output_dir}, {flag: path for flag, path in inputs.items() if path})


def resume_checkpoint(cfg: TrainConfig, record: dict) -> str | None:
    """The whole checkpoint of this run to resume (``latest``: the newest whole one); it lends ``record`` its run id."""
    from stepjepa.training.checkpoints import check_same_run

    if cfg.resume_from_checkpoint == "latest":
        checkpoint, skipped = RunDir(cfg.output_dir).latest_complete()
        for path, reason in skipped:
            print(f"note: skipped incomplete {path} ({reason})", file=sys.stderr)
    else:
        checkpoint = Path(cfg.resume_from_checkpoint)
        if not checkpoint.is_dir():
            raise UsageError(f"--resume_from_checkpoint {checkpoint}: no such checkpoint directory")
    record["run_id"] = check_same_run(checkpoint, record)["run_id"]
    return str(checkpoint)


def is_finished(cfg: TrainConfig, checkpoint: str) -> bool:
    """Whether the checkpoint is the run's last step (--max_steps, else the steps its epochs came to)."""
    from stepjepa.training.checkpoints import trained_steps

    step, planned = trained_steps(Path(checkpoint))
    return step >= (cfg.max_steps if cfg.max_steps > 0 else planned)


class SecondSignal(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop at once (a KeyboardInterrupt, so no library code catches it); ``signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signal(trainer):
    """First SIGINT/SIGTERM: stop after the current step (the caller saves a checkpoint); a second one aborts
    (:class:`SecondSignal`), also during that checkpoint's save when the caller saves within the block."""
    seen = {"signal": None}

    def handler(signum, frame):
        if seen["signal"]:
            raise SecondSignal(signum)
        seen["signal"] = signal.Signals(signum).name
        trainer.control.should_training_stop = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


def save_interrupted(trainer, signal_name: str) -> int:
    """The checkpoint of a run stopped by a signal (unless no step ended yet, or this step's is already saved);
    one line saying so; the exit status ``128 + signal``."""
    from stepjepa.training.rundir import read_record

    step = trainer.state.global_step
    status = 128 + signal.Signals[signal_name].value
    if step == 0:
        print(f"interrupted by {signal_name} before the first step ended: nothing to save", file=sys.stderr)
        return status
    saved = read_record(RunDir(trainer.args.output_dir).checkpoint(step)) or {}
    if trainer.run_record is None or saved.get("run_id") != trainer.run_record["run_id"]:
        trainer._save_checkpoint(trainer.model, trial=None)
    print(f"interrupted by {signal_name}: checkpoint saved at step {step}; "
          f"resume with --resume_from_checkpoint latest", file=sys.stderr)
    return status


def trim_metrics(output_dir: str, checkpoint: str) -> None:
    """Drop metric rows logged after the checkpoint (a hard kill), so a resumed run logs each step once."""
    from stepjepa.data import read_jsonl, write_jsonl_atomic

    metrics = RunDir(output_dir).metrics
    state = Path(checkpoint) / RunDir.TRAINER_STATE
    if not (metrics.is_file() and metrics.stat().st_size and state.is_file()):
        return
    step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    rows = [row for _, row in read_jsonl(metrics)]
    kept = [row for row in rows if row["step"] <= step]
    if len(kept) < len(rows):
        write_jsonl_atomic(metrics, kept)


def save_outputs(cfg: TrainConfig, model, tokenizer, summary: dict) -> None:
    """Save a model that ``from_pretrained`` loads (LoRA merged), its tokenizer, the LoRA adapter alone, the config,
    then the summary (``summary`` and the weights' sizes): a directory with a summary has its whole model.

    The summary of an earlier save is removed first, so a save cut short leaves no claim of a finished run."""
    from stepjepa.data import write_json_atomic

    run = RunDir(cfg.output_dir)
    run.forget_summary()
    with run.saving(run.path, "the final model"):
        _save_model(cfg, model, tokenizer, run)
        write_json_atomic(run.config, asdict(cfg))
        write_json_atomic(run.summary, {**summary, "weights": run.weight_sizes()})


def _save_model(cfg: TrainConfig, model, tokenizer, run: RunDir) -> None:
    """The merged model and tokenizer into the run directory; with LoRA the adapter alone into ``adapter/``."""
    from stepjepa.data import give_plain_modes
    from stepjepa.models import quiet_transformers, resolve_model_path
    from stepjepa.training.checkpoints import model_identity

    out = run.path
    if cfg.lora:
        adapter = run.adapter
        # Absolute (or a hub id): the adapter then loads on its base from any working directory.
        model.peft_config["default"].base_model_name_or_path = model_identity(resolve_model_path(cfg.model_name))
        # Predictor tokens grew the vocabulary: the adapter carries the resized embeddings with it.
        model.save_pretrained(adapter, save_embedding_layers=bool(cfg.predictors and cfg.mode != "regular"))
        tokenizer.save_pretrained(adapter)
        give_plain_modes(adapter)
        model = model.merge_and_unload()
    with quiet_transformers():  # no "Writing model shards" bar for a one-shard model
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    give_plain_modes(out)

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

from stepjepa.errors import UsageError
from stepjepa.training.runlock import LOCK_NAME

if TYPE_CHECKING:
    from stepjepa.training.config import TrainConfig

METRIC_FILES = ("metrics.jsonl", "eval_metrics.jsonl")


def check_output_dir(cfg: TrainConfig) -> None:
    """Never delete or empty a directory; refuse a non-empty one unless told to overwrite or resume."""
    path = Path(cfg.output_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output_dir {path} exists and is not a directory")
    # The lock file alone (rank 0 of this very run, or a dead run's) does not make a directory "not empty".
    if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()) and not (
            cfg.overwrite_output_dir or cfg.resume_from_checkpoint):
        raise UsageError(
            f"--output_dir {path} is not empty; pass --overwrite_output_dir, --resume_from_checkpoint, or another directory"
        )


def resume_checkpoint(cfg: TrainConfig, record: dict) -> str | None:
    """The whole checkpoint of this run to resume (``latest``: the newest whole one); it lends ``record`` its run id."""
    from stepjepa.training.checkpoints import check_same_run, latest_complete

    if cfg.resume_from_checkpoint == "latest":
        checkpoint, skipped = latest_complete(cfg.output_dir)
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


@contextmanager
def stop_on_signal(trainer):
    """First SIGINT/SIGTERM: stop after the current step (the caller saves a checkpoint); a second one aborts."""
    seen = {"signal": None}

    def handler(signum, frame):
        if seen["signal"]:
            raise KeyboardInterrupt
        seen["signal"] = signal.Signals(signum).name
        trainer.control.should_training_stop = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


def trim_metrics(output_dir: str, checkpoint: str) -> None:
    """Drop metric rows logged after the checkpoint (a hard kill), so a resumed run logs each step once."""
    from stepjepa.data import read_jsonl, write_jsonl_atomic

    metrics = Path(output_dir) / "metrics.jsonl"
    state = Path(checkpoint) / "trainer_state.json"
    if not (metrics.is_file() and metrics.stat().st_size and state.is_file()):
        return
    step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    rows = [row for _, row in read_jsonl(metrics)]
    kept = [row for row in rows if row["step"] <= step]
    if len(kept) < len(rows):
        write_jsonl_atomic(metrics, kept)


def save_outputs(cfg: TrainConfig, model, tokenizer) -> None:
    """Save a model that ``from_pretrained`` loads (LoRA merged), its tokenizer, and the LoRA adapter alone."""
    from stepjepa.data import give_plain_modes
    from stepjepa.models import resolve_model_path
    from stepjepa.training.checkpoints import model_identity

    out = Path(cfg.output_dir)
    if cfg.lora:
        adapter = out / "adapter"
        # Absolute (or a hub id): the adapter then loads on its base from any working directory.
        model.peft_config["default"].base_model_name_or_path = model_identity(resolve_model_path(cfg.model_name))
        # Predictor tokens grew the vocabulary: the adapter carries the resized embeddings with it.
        model.save_pretrained(adapter, save_embedding_layers=bool(cfg.predictors and cfg.mode != "regular"))
        tokenizer.save_pretrained(adapter)
        give_plain_modes(adapter)
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    give_plain_modes(out)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

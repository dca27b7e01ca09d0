"""Checkpoints that are whole or ignored, that name the run they belong to, and that rotate within that run only.

The Trainer writes a checkpoint's files one by one; ``stepjepa_run.json`` is removed before the first of them
and written after all of them (atomically), so a checkpoint without it was cut short (a hard kill, a full disk)
and is never resumed, even when it was saved over a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.core.modes import Mode
from stepjepa.data import write_json_atomic
from stepjepa.data.files import file_sha256
from stepjepa.training.rundir import (
    RUN_RECORD,
    TRAINER_STATE,
    RunDir,
    identity_differences,
    incomplete_reason,
    read_record,
)


def model_identity(name: str) -> str:
    """A local model directory by its absolute path (the same from any working directory), else the name."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def run_record(mode: Mode, model_name: str, train_file: str, predictors: int, seed: int,
               lora: bool = False, pack_length: int | None = None) -> dict[str, Any]:
    """The identity of a fresh run, with a new ``run_id`` (a resumed run takes its checkpoint's ``run_id``);
    ``pack_length``: the row length of a --packing run, None without packing."""
    return {
        "mode": mode,
        "model": model_identity(model_name),
        "train_file_sha256": file_sha256(train_file),
        "predictors": predictors,
        "seed": seed,
        "lora": lora,
        "pack_length": pack_length,
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
    }


def check_same_run(checkpoint: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's own record; raises when it was made by a run with another mode, model, data, K, seed or
    LoRA setting or packing (its weights and optimizer state would not fit this run)."""
    reason = incomplete_reason(checkpoint)
    if reason:
        raise UsageError(f"--resume_from_checkpoint {checkpoint}: incomplete checkpoint ({reason})")
    theirs = read_record(checkpoint)
    differ = identity_differences(theirs, record)
    if differ:
        what = "; ".join(differ)
        raise UsageError(f"{checkpoint} belongs to another run ({what}); resume it with that run's flags "
                         "or train into another --output_dir")
    return theirs


def trained_steps(checkpoint: Path) -> tuple[int, int]:
    """``(global_step, max_steps)`` recorded in a checkpoint's trainer state."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    return int(state["global_step"]), int(state["max_steps"])


def mark_incomplete(checkpoint: Path) -> None:
    """Before any file of a checkpoint is (re)written: a save cut short from here on is never taken as whole.

    The record goes first (one unlink), then whatever an earlier save left there, so the new checkpoint holds
    its own files only (not an earlier run's optimizer state or full weights beside a LoRA adapter)."""
    (checkpoint / RUN_RECORD).unlink(missing_ok=True)
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint)


def mark_complete(checkpoint: Path, record: dict[str, Any]) -> None:
    """Written after every other file of the checkpoint: from now on it may be resumed."""
    write_json_atomic(checkpoint / RUN_RECORD, record)


def rotate(output_dir: str | os.PathLike, record: dict[str, Any], keep: int, current: Path) -> list[Path]:
    """Delete this run's (same ``run_id``) checkpoints beyond the newest ``keep``, never ``current``; 0 keeps all."""
    if keep <= 0:
        return []
    own = [path for _, path in RunDir(output_dir).checkpoints()
           if (read_record(path) or {}).get("run_id") == record["run_id"]]
    doomed = [path for path in own[: max(len(own) - keep, 0)] if path.resolve() != current.resolve()]
    for path in doomed:
        shutil.rmtree(path)
    return doomed

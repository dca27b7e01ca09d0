"""Checkpoints that are whole or ignored, that name the run they belong to, and that rotate within that run only.

The Trainer writes a checkpoint's files one by one; ``stepjepa_run.json`` is written after all of them
(atomically), so a checkpoint without it was cut short (a hard kill, a full disk) and is never resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from stepjepa.core.modes import Mode
from stepjepa.data import write_json_atomic
from stepjepa.data.files import file_sha256
from stepjepa.errors import UsageError

RUN_RECORD = "stepjepa_run.json"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# What must match for a checkpoint to be resumed by a run; ``run_id`` only tells attempts apart for rotation.
IDENTITY_KEYS = ("mode", "model", "train_file_sha256", "predictors", "seed")


def model_identity(name: str) -> str:
    """A local model directory by its absolute path (the same from any working directory), else the name."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def run_record(mode: Mode, model_name: str, train_file: str, predictors: int, seed: int) -> dict[str, Any]:
    """The identity of a fresh run, with a new ``run_id`` (a resumed run takes its checkpoint's ``run_id``)."""
    return {
        "mode": mode,
        "model": model_identity(model_name),
        "train_file_sha256": file_sha256(train_file),
        "predictors": predictors,
        "seed": seed,
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
    }


def read_record(checkpoint: Path) -> dict[str, Any] | None:
    """The run record of a whole checkpoint, or None when the checkpoint is incomplete."""
    try:
        record = json.loads((checkpoint / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and (checkpoint / TRAINER_STATE).is_file() else None


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed (a save cut short), or None when it is whole."""
    if read_record(checkpoint) is not None:
        return None
    if not (checkpoint / TRAINER_STATE).is_file():
        return f"no {TRAINER_STATE}: its save did not finish"
    return f"no {RUN_RECORD}: its save did not finish, or a stepjepa without run records wrote it"


def numbered_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-N`` directory, oldest step first; other names are not checkpoints."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest whole checkpoint (None if there is none) and the newer incomplete ones skipped, with why."""
    skipped = []
    for _, path in reversed(numbered_checkpoints(output_dir)):
        reason = incomplete_reason(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def latest_complete(output_dir: str | os.PathLike) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest whole checkpoint and the newer incomplete ones skipped, with why; none whole is a UsageError."""
    path, skipped = newest_complete(output_dir)
    if path is not None:
        return path, skipped
    if skipped:
        raise UsageError(f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir} "
                         f"({skipped[0][0].name}: {skipped[0][1]})")
    raise UsageError(f"--resume_from_checkpoint latest: no checkpoint-* in {output_dir}")


def check_same_run(checkpoint: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's own record; raises when it was made by a run with another mode, model, data, K or seed."""
    reason = incomplete_reason(checkpoint)
    if reason:
        raise UsageError(f"--resume_from_checkpoint {checkpoint}: incomplete checkpoint ({reason})")
    theirs = read_record(checkpoint)
    differ = [key for key in IDENTITY_KEYS if theirs.get(key) != record[key]]
    if differ:
        what = "; ".join(f"{key} {theirs.get(key)!r} there, {record[key]!r} here" for key in differ)
        raise UsageError(f"{checkpoint} belongs to another run ({what}); resume it with that run's flags "
                         "or train into another --output_dir")
    return theirs


def trained_steps(checkpoint: Path) -> tuple[int, int]:
    """``(global_step, max_steps)`` recorded in a checkpoint's trainer state."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    return int(state["global_step"]), int(state["max_steps"])


def mark_complete(checkpoint: Path, record: dict[str, Any]) -> None:
    """Written after every other file of the checkpoint: from now on it may be resumed."""
    write_json_atomic(checkpoint / RUN_RECORD, record)


def rotate(output_dir: str | os.PathLike, record: dict[str, Any], keep: int, current: Path) -> list[Path]:
    """Delete this run's (same ``run_id``) checkpoints beyond the newest ``keep``, never ``current``; 0 keeps all."""
    if keep <= 0:
        return []
    own = [path for _, path in numbered_checkpoints(output_dir)
           if (read_record(path) or {}).get("run_id") == record["run_id"]]
    doomed = [path for path in own[: max(len(own) - keep, 0)] if path.resolve() != current.resolve()]
    for path in doomed:
        shutil.rmtree(path)
    return doomed

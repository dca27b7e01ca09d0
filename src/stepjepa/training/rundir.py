"""A training run's directory: every file and folder a run writes there, by name, and which of them count.

A checkpoint is complete once its run record (``stepjepa_run.json``) is there: it is written last and removed
first when the checkpoint is saved again. A run is finished once ``train_summary.json`` names this very run (its
identity and ``run_id``) and the weight files it lists are there at the sizes it lists: the summary is removed
before the final model is saved and written only after it.
"""

from __future__ import annotations

import errno
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from stepjepa.core.errors import UsageError
from stepjepa.training.runlock import LOCK_NAME

RUN_RECORD = "stepjepa_run.json"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# What must match for a checkpoint (or a finished run's summary) to be this run's; ``run_id`` tells attempts apart.
# ``pack_length`` is None for a run of one conversation per row (records older than it read as such): a packed
# run's data order and steps are its packs', which an unpacked resume would not continue.
IDENTITY_KEYS = ("mode", "model", "train_file_sha256", "predictors", "seed", "lora", "pack_length")


def read_record(checkpoint: Path) -> dict[str, Any] | None:
    """The run record of a whole checkpoint, or None when the checkpoint is incomplete.

    Records written before ``lora`` was part of the identity get it from the checkpoint's files."""
    try:
        record = json.loads((checkpoint / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and (checkpoint / TRAINER_STATE).is_file()):
        return None
    record.setdefault("lora", (checkpoint / "adapter_config.json").is_file())
    return record


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed (a save cut short), or None when it is whole."""
    if read_record(checkpoint) is not None:
        return None
    if not (checkpoint / TRAINER_STATE).is_file():
        return f"no {TRAINER_STATE}: its save did not finish"
    return f"no {RUN_RECORD}: its save did not finish, or a stepjepa without run records wrote it"


def identity_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """``"key THEIRS there, OURS here"`` for each identity key on which two run records differ."""
    return [f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in IDENTITY_KEYS
            if theirs.get(key) != ours.get(key)]


def _os_error_number(exc: BaseException) -> int | None:
    """The errno behind a failed write: an OSError's own, or the ``os error N`` safetensors puts in its text."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    match = re.search(r"os error (\d+)", str(exc))
    return int(match.group(1)) if match else None


class RunDir:
    """The files and folders of one training run's ``--output_dir`` (``path``): names here, nowhere else."""

    METRICS = "metrics.jsonl"
    EVAL_METRICS = "eval_metrics.jsonl"
    SUMMARY = "train_summary.json"
    CONFIG = "train_config.json"
    ADAPTER = "adapter"
    LOCK = LOCK_NAME
    RUN_RECORD = RUN_RECORD
    TRAINER_STATE = TRAINER_STATE
    METRIC_FILES = (METRICS, EVAL_METRICS)
    # The final model's weights, whose sizes the summary lists (the adapter's under ADAPTER/).
    WEIGHTS = "*.safetensors"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def eval_metrics(self) -> Path:
        return self.path / self.EVAL_METRICS

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def adapter(self) -> Path:
        return self.path / self.ADAPTER

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    def checkpoint(self, step: int) -> Path:
        """The folder of the checkpoint at optimizer step ``step`` (the Trainer's ``checkpoint-N``)."""
        return self.path / f"checkpoint-{step}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every ``checkpoint-N`` directory, oldest step first; other names are not checkpoints."""
        found = []
        for path in self.path.glob("checkpoint-*"):
            match = CHECKPOINT_NAME.fullmatch(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def newest_complete(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest whole checkpoint (None if there is none) and the newer incomplete ones skipped, with why."""
        skipped = []
        for _, path in reversed(self.checkpoints()):
            reason = incomplete_reason(path)
            if reason is None:
                return path, skipped
            skipped.append((path, reason))
        return None, skipped

    def latest_complete(self) -> tuple[Path, list[tuple[Path, str]]]:
        """The newest whole checkpoint and the newer incomplete ones skipped, with why; none whole is a UsageError."""
        path, skipped = self.newest_complete()
        if path is not None:
            return path, skipped
        if skipped:
            raise UsageError(f"--resume_from_checkpoint latest: no complete checkpoint in {self.path} "
                             f"({skipped[0][0].name}: {skipped[0][1]})")
        raise UsageError(f"--resume_from_checkpoint latest: no checkpoint-* in {self.path}")

    def weight_sizes(self) -> dict[str, int]:
        """``{relative path: bytes}`` of the final model's weight files (and the adapter's), as saved now."""
        files = [*self.path.glob(self.WEIGHTS), *self.adapter.glob(self.WEIGHTS)]
        return {str(path.relative_to(self.path)): path.stat().st_size for path in sorted(files)}

    def finished_summary(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The summary when it marks this run (``record``: identity and ``run_id``) finished with its model whole;
        None when it is missing, another run's, from a stepjepa that wrote no run record, or its weights are not
        the ones it lists."""
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        theirs = summary.get("run") if isinstance(summary, dict) else None
        if not isinstance(theirs, dict) or theirs.get("run_id") != record.get("run_id"):
            return None
        if identity_differences(theirs, record):
            return None
        weights = summary.get("weights")
        if not isinstance(weights, dict) or not weights:
            return None
        for name, size in weights.items():
            path = self.path / name
            if not path.is_file() or path.stat().st_size != size:
                return None
        return summary

    @contextmanager
    def saving(self, folder: Path, what: str) -> Iterator[None]:
        """Write ``what`` into ``folder``; a failed write (a full disk, a file size limit: an OSError, or the
        RuntimeError torch and the SafetensorError safetensors turn it into) becomes one OSError naming the file
        (the folder where the library does not say which of its files failed; safetensors removes a cut file)
        and the checkpoint kept."""
        from safetensors import SafetensorError

        try:
            yield
        except (OSError, RuntimeError, SafetensorError) as exc:
            number = _os_error_number(exc)
            reason = os.strerror(number) if number else "write failed (a full disk or a file size limit)"
            kept, _ = self.newest_complete()
            where = f"the last complete checkpoint, {kept.name}, is kept" if kept else "no complete checkpoint is kept"
            path = exc.filename if isinstance(exc, OSError) and exc.filename else folder
            raise OSError(number or errno.EIO, f"{reason} while saving {what}; {where}", str(path)) from None

    def forget_summary(self) -> None:
        """Remove the summary (one unlink, so atomic): from now on the directory does not claim a finished run."""
        self.summary.unlink(missing_ok=True)

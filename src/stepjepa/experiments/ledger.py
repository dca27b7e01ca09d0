"""A sweep's ledger: one JSON line per finished run, which ``stepjepa sweep`` appends and ``stepjepa report`` reads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepjepa.core.errors import UsageError
from stepjepa.data import read_jsonl
from stepjepa.evaluation.config import PROBE_SCALARS
from stepjepa.machine import command_line, git_commit

if TYPE_CHECKING:
    from stepjepa.experiments.config import SweepConfig
    from stepjepa.experiments.sweep_grid import Run

# The evaluation summary's termination diagnostics (stepjepa.evaluation.evaluate.termination_stats).
TERMINATION_KEYS = ("termination_rows", "ended_at_end_of_turn", "hit_max_new_tokens", "end_of_turn_share",
                    "max_new_tokens_share", "mean_generated_tokens", "median_generated_tokens", "accuracy_when_ended")


def read_ledger(path: Path) -> dict[str, dict]:
    """The last ledger entry of every run, by run name (a redone run's newer entry replaces the older)."""
    if not path.is_file() or not path.read_bytes().strip():
        return {}
    entries = {}
    for line, entry in read_jsonl(path):
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
            raise UsageError(f"{path}:{line}: not a ledger entry of stepjepa sweep")
        entries[entry["run"]] = entry
    return entries


def check_ledger(ledger: dict[str, dict], cfg: SweepConfig, path: Path) -> None:
    """Refuse to add runs to a ledger whose runs were made with another model, data or pass-through flags."""
    fixed = cfg.fixed_settings()
    for name, entry in ledger.items():
        old = entry.get("fixed", {})
        for key, value in fixed.items():
            if old.get(key) != value:
                raise UsageError(
                    f"{path}: run {name} was made with {key}={old.get(key)!r}, this sweep has {value!r}; "
                    "pass another --output_dir"
                )


def probe_scalars(probe: dict | None) -> dict[str, dict[str, float]] | None:
    """The probe summary's numbers per view (``k0``, ``k2``, ...), without the per-pair lists."""
    if probe is None:
        return None
    return {view: {key: values[key] for key in PROBE_SCALARS} for view, values in probe["views"].items()}


def run_provenance(train: dict, evaluation: dict, probe: dict | None) -> dict[str, Any]:
    """Where a run came from: stepjepa's version and git commit (the sweep's: its children run the same code), the
    machine its training (or, for the base model, its evaluation) ran on, each step's precision, the sweep's
    command line."""
    from stepjepa import __version__

    commit, dirty = git_commit()
    ran = (train or {}).get("provenance") or evaluation.get("provenance") or {}
    return {
        "stepjepa_version": __version__, "git_commit": commit, "git_dirty": dirty, "machine": ran.get("machine"),
        "precision": {"train": ((train or {}).get("provenance") or {}).get("precision"),
                      "evaluate": evaluation.get("precision"), "probe": (probe or {}).get("precision")},
        "command": command_line(),
    }


def ledger_entry(cfg: SweepConfig, run: Run, train: dict, evaluation: dict, seconds: float,
                 probe: dict | None = None) -> dict[str, Any]:
    """One finished run: its settings, training outcome, accuracy and probe, and the settings all runs share."""
    return {
        "run": run.name,
        "config": run.config_name,
        "mode": run.mode,
        "seed": run.seed,
        "lbd": run.lbd,
        "predictors": run.predictors,
        "loss": run.loss,
        "step_pairs": run.step_pairs,
        "target_stop_grad": run.target_stop_grad,
        "accuracy": evaluation["accuracy"],
        "strict_accuracy": evaluation["strict_accuracy"],
        "correct": evaluation["correct"],
        "total_examples": evaluation["total_examples"],
        "task": evaluation.get("task", "gsm8k"),
        **{key: evaluation.get(key) for key in TERMINATION_KEYS},
        "probe": probe_scalars(probe),
        "train_loss": train.get("train_loss"),
        "global_step": train.get("global_step"),
        "train_runtime_s": train.get("runtime_s"),
        "run_seconds": round(seconds, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fixed": cfg.fixed_settings(),
        "provenance": run_provenance(train, evaluation, probe),
    }

"""The child processes of one sweep run: the `stepjepa train`, `evaluate` and `probe` command lines, the files
they write in the run's directory, and checks of their flags and probe file before any run starts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stepjepa.commands import parse_config
from stepjepa.core.errors import UsageError
from stepjepa.data import read_jsonl
from stepjepa.flags import split_flags

if TYPE_CHECKING:
    from stepjepa.experiments.config import SweepConfig
    from stepjepa.experiments.sweep_grid import Run

EVAL_OUTPUT = "eval.jsonl"
EVAL_SUMMARY = "eval_summary.json"
PROBE_OUTPUT = "probe.json"


def train_command(cfg: SweepConfig, run: Run, run_dir: Path, overwrite: bool, resume: bool = False) -> list[str]:
    """The command line that trains one run (the launcher, or this Python, then `-m stepjepa train`)."""
    start = split_flags(cfg.launcher, "launcher") or [sys.executable]
    return [
        *start, "-m", "stepjepa", "train",
        "--train_file", str(cfg.train_file), "--model_name", cfg.model_name, "--output_dir", str(run_dir),
        "--seed", str(run.seed), *run.mode_flags(), *split_flags(cfg.train_args, "train_args"),
        *(["--overwrite_output_dir"] if overwrite and not resume else []),
        *(["--resume_from_checkpoint", "latest"] if resume else []),
    ]


def eval_command(cfg: SweepConfig, run_dir: Path, model: str | None = None) -> list[str]:
    """The command line that evaluates one trained run (or ``model``) into the run's directory."""
    limit = ["--max_examples", str(cfg.max_examples)] if cfg.max_examples else []
    limit += ["--task", cfg.task] if cfg.task else []
    return [
        sys.executable, "-m", "stepjepa", "evaluate",
        "--model_path", model or str(run_dir), "--test_file", str(cfg.test_file),
        "--output_file", str(run_dir / EVAL_OUTPUT), *limit, "--debug", "0",  # no bar; --eval_args may override
        *split_flags(cfg.eval_args, "eval_args"),
    ]


def probe_command(cfg: SweepConfig, run_dir: Path, model: str | None = None) -> list[str]:
    """The command line that probes one trained run (or ``model``) on the probe file into the run's directory."""
    return [
        sys.executable, "-m", "stepjepa", "probe",
        "--model_path", model or str(run_dir), "--test_file", str(cfg.probe_file or cfg.test_file),
        "--output_file", str(run_dir / PROBE_OUTPUT), "--mode", cfg.probe_mode, "--debug", "0",
        *split_flags(cfg.probe_args, "probe_args"),
    ]


def check_commands(cfg: SweepConfig, run: Run, run_dir: Path) -> None:
    """Parse one run's train and evaluate flags now, so a bad pass-through flag fails before hours of runs."""
    commands = [("train", train_command(cfg, run, run_dir, False)), ("evaluate", eval_command(cfg, run_dir))]
    if not cfg.no_probe:
        commands.append(("probe", probe_command(cfg, run_dir)))
    for command, argv in commands:
        flags = argv[argv.index(command) + 1 :]
        try:
            parsed = parse_config(command, flags, prog=f"stepjepa sweep ({command} flags)")
        except ValueError as exc:
            raise UsageError(f"{command} flags of run {run.name}: {exc}") from None
        if command == "train" and parsed.debug >= 7:
            raise UsageError("--train_args sets --debug 7, which prints a batch and exits without training")


def check_probe_file(cfg: SweepConfig) -> None:
    """The probe needs chats (with steps): refuse a GSM8K-format probe file before any run starts."""
    path = Path(cfg.probe_file or cfg.test_file)
    if cfg.probe_file and not path.is_file():
        raise UsageError(f"--probe_file {path}: no such file")
    first = read_jsonl(path)[0]
    if not (isinstance(first[1], dict) and "messages" in first[1]):
        raise UsageError(f"{path}:{first[0]}: the probe needs a chat file ({{messages}}); pass --probe_file CHATS.jsonl "
                         "or --no_probe")

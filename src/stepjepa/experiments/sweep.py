"""The `sweep` command: a resumable grid of train + evaluate runs, one directory and one ledger line per run.

The grid is planned in :mod:`stepjepa.experiments.sweep_grid`, each run's child command lines built and checked in
:mod:`stepjepa.experiments.sweep_children`, and the runs executed (in turn or in parallel) in :mod:`stepjepa.experiments.sweep_runs`.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from stepjepa.core.errors import UsageError
from stepjepa.experiments.config import BASE, LEDGER, SweepConfig
from stepjepa.experiments.jobs import ChildRunner, Runner
from stepjepa.experiments.ledger import check_ledger, read_ledger
from stepjepa.experiments.sweep_children import (
    check_commands,
    check_probe_file,
)
from stepjepa.experiments.sweep_grid import Run, plan_runs
from stepjepa.experiments.sweep_runs import print_plan, run_in_parallel, run_in_turn, run_status


def run_sweep(cfg: SweepConfig, runner: Runner | None = None) -> int:
    """Run every unfinished run of the grid (in turn, or ``--jobs`` at once); 0 when all are finished, 1 if any failed, 130 / 143 if
    interrupted by SIGINT / SIGTERM (passed on to the running child, which checkpoints; a rerun resumes it)."""
    runner = runner or ChildRunner()
    forward = getattr(runner, "forward", None)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if forward else {}
    try:
        return _run_grid(cfg, runner)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_grid(cfg: SweepConfig, runner: Runner) -> int:
    for name in ("train_file", "test_file"):
        if not Path(getattr(cfg, name)).is_file():
            raise UsageError(f"--{name} {getattr(cfg, name)}: no such file")
    output_dir = Path(cfg.output_dir)
    ledger_path = output_dir / LEDGER
    ledger = read_ledger(ledger_path)
    check_ledger(ledger, cfg, ledger_path)
    if not cfg.no_probe:
        check_probe_file(cfg)
    runs = plan_runs(cfg)
    for run in {run.config_name: run for run in runs}.values():
        check_commands(cfg, run, output_dir / run.name)
    if not cfg.no_base:
        runs.insert(0, Run(BASE, 0))
    status = {run.name: run_status(output_dir, run, ledger) for run in runs}
    pending = [run for run in runs if status[run.name] != "done"]

    if cfg.dry_run:
        print_plan(cfg, runs, status, output_dir)
        return 0

    output_dir.mkdir(parents=True, exist_ok=True)
    outcome = (run_in_parallel if cfg.parallel_jobs > 1 else run_in_turn)(cfg, pending, status, runner, output_dir)
    if isinstance(outcome, int):
        return outcome
    failed = outcome
    print(f"sweep {output_dir}: {len(runs)} runs, {len(runs) - len(pending)} were done, "
          f"{len(pending) - len(failed)} ran now, {len(failed)} failed; ledger {ledger_path}; "
          f"report: stepjepa report {output_dir}")
    if failed:
        print(f"failed runs (run the same command again to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

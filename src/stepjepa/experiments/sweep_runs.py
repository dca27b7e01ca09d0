"""Running a sweep's runs: one run's train, evaluate and probe children, the runs one after the other or
several at once, and the ledger line and message after each."""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stepjepa.data import append_jsonl
from stepjepa.experiments.config import BASE, LEDGER
from stepjepa.experiments.jobs import Runner, job_environments, run_parallel
from stepjepa.experiments.ledger import ledger_entry
from stepjepa.experiments.sweep_children import (
    EVAL_OUTPUT,
    EVAL_SUMMARY,
    PROBE_OUTPUT,
    eval_command,
    probe_command,
    train_command,
)
from stepjepa.training.rundir import RunDir
from stepjepa.training.runlock import DirectoryInUse, output_dir_lock

if TYPE_CHECKING:
    from stepjepa.experiments.config import SweepConfig
    from stepjepa.experiments.sweep_grid import Run

# Files a redone run must not inherit: the trainer appends to the metrics files and evaluate
# resumes from eval.jsonl, so stale rows of the interrupted attempt would mix with the new ones.
STALE_OUTPUTS = (RunDir.METRICS, RunDir.EVAL_METRICS, EVAL_OUTPUT, EVAL_SUMMARY, RunDir.SUMMARY)
LOGS = "logs"  # parallel runs: each run's children write to logs/RUN.log instead of the terminal
# Exit statuses of a child stopped by Ctrl-C or SIGTERM -> the signal: the sweep stops too instead of going on.
INTERRUPTED = {130: signal.SIGINT, -signal.SIGINT: signal.SIGINT, 143: signal.SIGTERM, -signal.SIGTERM: signal.SIGTERM}
IN_USE = 256  # execute_run's status for a run skipped because a live process holds its lock (no exit status)


def run_status(output_dir: Path, run: Run, ledger: dict[str, dict]) -> str:
    """``done`` (ledger entry and evaluation present), ``redo`` (a directory left half-finished) or ``new``."""
    run_dir = output_dir / run.name
    if run.name in ledger and (run_dir / EVAL_SUMMARY).is_file() and (
            ledger[run.name].get("probe") is None or (run_dir / PROBE_OUTPUT).is_file()):
        return "done"
    return "redo" if run_dir.exists() else "new"


def has_whole_checkpoint(run_dir: Path) -> bool:
    """Whether training in ``run_dir`` can resume (a whole checkpoint is there)."""
    return RunDir(run_dir).newest_complete()[0] is not None


def print_plan(cfg: SweepConfig, runs: list[Run], status: dict[str, str], output_dir: Path) -> None:
    """The dry run's listing: each run and whether it is done, redone, resumed or new, then the first
    unfinished run's command lines."""
    labels = {"done": "done", "redo": "redo (half-finished)", "new": "to run"}
    for run in runs:
        resumable = status[run.name] == "redo" and has_whole_checkpoint(output_dir / run.name)
        print(f"  {'resume (checkpoint)' if resumable else labels[status[run.name]]:<21} {run.name}")
    pending = [run for run in runs if status[run.name] != "done"]
    redo = sum(status[run.name] == "redo" for run in runs)
    print(f"{len(runs)} runs in {output_dir}: {len(runs) - len(pending)} done, {len(pending)} to run ({redo} redone)")
    first = next((run for run in pending if run.mode != BASE), None)
    if first:
        print("first run's commands:\n  " + shlex.join(train_command(cfg, first, output_dir / first.name, False)))
        print("  " + shlex.join(eval_command(cfg, output_dir / first.name)))
        if not cfg.no_probe:
            print("  " + shlex.join(probe_command(cfg, output_dir / first.name)))


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _run_step(runner: Runner, argv: list[str], output: Path, run: Run) -> tuple[int, dict | None]:
    """Run one child command and read the JSON it must write: ``(0, its content)`` or ``(status, None)``."""
    status = runner(argv)
    if status:
        return status, None
    value = _read_json(output)
    if value is None:
        print(f"stepjepa sweep: {run.name}: {argv[argv.index('stepjepa') + 1]} wrote no {output}", file=sys.stderr)
        return 1, None
    return 0, value


def execute_run(cfg: SweepConfig, run: Run, run_dir: Path, redo: bool, runner: Runner) -> tuple[int, dict | None]:
    """Train, evaluate and probe one run (the base model: evaluate and probe only): ``(0, ledger entry)``,
    or the failing step's exit status and None."""
    started = time.perf_counter()
    resume = redo and has_whole_checkpoint(run_dir)
    if redo:
        # A resumed run keeps its metrics (train trims them to the checkpoint) and, when its training had
        # finished, the evaluation and probe of that same model.
        finished = RunDir(run_dir).summary.is_file()
        evaluated = (EVAL_OUTPUT, EVAL_SUMMARY, PROBE_OUTPUT)
        try:
            # Under the run's lock: a child of an earlier (killed) sweep may still train there.
            with output_dir_lock(run_dir):
                for name in (() if finished else evaluated) if resume else (*STALE_OUTPUTS, PROBE_OUTPUT):
                    (run_dir / name).unlink(missing_ok=True)
        except DirectoryInUse as exc:
            print(f"stepjepa sweep: {run.name} skipped: process {exc.holder} still runs in {run_dir} (a run of an "
                  "earlier sweep?); nothing there was deleted; run the same command again once it has ended",
                  file=sys.stderr)
            return IN_USE, None
    model = cfg.model_name if run.mode == BASE else None
    train: dict | None = {}
    if run.mode != BASE:
        status, train = _run_step(runner, train_command(cfg, run, run_dir, overwrite=redo, resume=resume),
                                  RunDir(run_dir).summary, run)
        if status:
            return status, None
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    status, evaluation = _run_step(runner, eval_command(cfg, run_dir, model), run_dir / EVAL_SUMMARY, run)
    if status:
        return status, None
    probe = None
    if not cfg.no_probe:
        status, probe = _run_step(runner, probe_command(cfg, run_dir, model), run_dir / PROBE_OUTPUT, run)
        if status:
            return status, None
    return 0, ledger_entry(cfg, run, train, evaluation, time.perf_counter() - started, probe)


def _record(cfg: SweepConfig, run: Run, code: int, entry: dict | None, label: str, received: int | None,
            failed: list[str], log: Path | None = None) -> None:
    """The parent's part after a run ends: the ledger line (the one writer) and what to say."""
    ledger_path = Path(cfg.output_dir) / LEDGER
    if entry is not None:
        append_jsonl(ledger_path, entry)
    if received:
        state = "finished" if entry else "unfinished (not in the ledger)"
        print(f"stepjepa sweep: interrupted by {signal.Signals(received).name} during {run.name}, which is "
              f"{state}; run the same command again to go on", file=sys.stderr)
    elif entry is None:
        failed.append(run.name)
        if code == IN_USE:
            return  # execute_run said why
        print(f"stepjepa sweep: {run.name} failed (exit status {code}); the sweep goes on"
              + (f"; its output: {log}" if log else ""), file=sys.stderr)
    else:
        print(f"{label} {run.name}: accuracy {100 * entry['accuracy']:.1f}% "
              f"(strict {100 * entry['strict_accuracy']:.1f}%) on {entry['total_examples']} problems, "
              f"{entry['run_seconds']:.0f}s", flush=True)


def run_in_turn(cfg: SweepConfig, pending: list[Run], status: dict[str, str], runner: Runner,
                output_dir: Path) -> list[str] | int:
    """One run after the other, children on this terminal: the failed runs, or the status of an interruption."""
    failed: list[str] = []
    for number, run in enumerate(pending, start=1):
        label = f"[{number}/{len(pending)}]"
        print(f"{label} {run.name}{' (redone)' if status[run.name] == 'redo' else ''}", flush=True)
        code, entry = execute_run(cfg, run, output_dir / run.name, status[run.name] == "redo", runner)
        received = getattr(runner, "signal", None) or INTERRUPTED.get(code)
        _record(cfg, run, code, entry, label, received, failed)
        if received:
            return 128 + received
    return failed


def run_in_parallel(cfg: SweepConfig, pending: list[Run], status: dict[str, str], runner: Runner,
                    output_dir: Path) -> list[str] | int:
    """Up to ``--jobs`` runs at once, one job environment each, their output in ``logs/``; this thread alone
    writes the ledger. The failed runs, or the status of an interruption."""
    envs = job_environments(cfg.device_slots, cfg.parallel_jobs)
    (output_dir / LOGS).mkdir(exist_ok=True)
    failed: list[str] = []
    label = {run.name: f"[{number}/{len(pending)}]" for number, run in enumerate(pending, start=1)}

    def log(run: Run) -> Path:
        return output_dir / LOGS / f"{run.name}.log"

    def announce(run: Run, job: int) -> None:
        devices = f", CUDA_VISIBLE_DEVICES={envs[job]['CUDA_VISIBLE_DEVICES']}" if cfg.device_slots else ""
        print(f"{label[run.name]} {run.name}{' (redone)' if status[run.name] == 'redo' else ''} started "
              f"(job {job + 1}{devices}; output {log(run)})", flush=True)

    def work(run: Run, job: int) -> tuple[int, dict | None]:
        def job_runner(argv: list[str]) -> int:
            return runner(argv, env=envs[job], log=log(run))

        return execute_run(cfg, run, output_dir / run.name, status[run.name] == "redo", job_runner)

    def finish(run: Run, result: tuple[int, dict | None]) -> int | None:
        code, entry = result
        received = getattr(runner, "signal", None) or INTERRUPTED.get(code)
        _record(cfg, run, code, entry, label[run.name], received, failed, log(run))
        return received

    stopped, not_started = run_parallel(pending, work, finish, runner, cfg.parallel_jobs, announce)
    if stopped:
        if not_started:
            print(f"stepjepa sweep: {len(not_started)} runs not started after {signal.Signals(stopped).name}; run "
                  "the same command again to go on", file=sys.stderr)
        return 128 + stopped
    return failed

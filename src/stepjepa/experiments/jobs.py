"""Child processes of a sweep: one at a time on this terminal, or several at once, one job environment each."""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, TypeVar

# A runner executes one command line and returns its exit status; runners of parallel sweeps also take
# ``env`` (the child's environment) and ``log`` (a file for its output) as keywords.
Runner = Callable[..., int]
Item = TypeVar("Item")
Result = TypeVar("Result")
BASE_PORT = 29500  # torch.distributed's default rendezvous port; parallel jobs take others


class ChildRunner:
    """Runs each command as a child in its own session (and process group), so a terminal's Ctrl-C reaches
    the sweep alone; ``forward`` (the sweep's SIGINT/SIGTERM handler) passes each signal on to every running
    child, which checkpoints and exits. After a signal no further child starts. Safe to call from several
    threads (parallel runs)."""

    def __init__(self) -> None:
        self.processes: set[subprocess.Popen] = set()
        self.signal: int | None = None
        self._lock = threading.Lock()

    def __call__(self, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> int:
        output = open(log, "ab") if log else None
        try:
            with self._lock:
                if self.signal:
                    return 128 + self.signal
                process = subprocess.Popen(argv, start_new_session=True, env=env, stdout=output,  # process_group=: 3.11
                                           stderr=subprocess.STDOUT if output else None)
                self.processes.add(process)
            if self.signal:  # came while the child was starting
                process.send_signal(self.signal)
            try:
                return process.wait()
            finally:
                with self._lock:
                    self.processes.discard(process)
        finally:
            if output:
                output.close()

    def forward(self, signum: int, frame) -> None:
        self.signal = signum
        for process in self.processes.copy():
            process.send_signal(signum)


def job_environments(device_slots: list[str], jobs: int) -> list[dict[str, str]]:
    """The environment of each parallel job: its GPUs (``device_slots``: CUDA_VISIBLE_DEVICES values), else an
    equal share of the CPU cores (OMP_NUM_THREADS); and its own rendezvous port, so that two jobs' torchrun or
    accelerate launchers do not collide."""
    from stepjepa.machine import available_cores

    share = str(max(1, available_cores() // jobs))
    envs = []
    for job in range(jobs):
        env = dict(os.environ)
        if device_slots:
            env["CUDA_VISIBLE_DEVICES"] = device_slots[job]
        else:
            env.update(OMP_NUM_THREADS=share, MKL_NUM_THREADS=share)
        port = str(BASE_PORT + 11 * (job + 1))
        env.update(MASTER_PORT=port, PET_MASTER_PORT=port)
        envs.append(env)
    return envs


def run_parallel(items: list[Item], work: Callable[[Item, int], Result], finish: Callable[[Item, Result], int | None],
                 runner: Runner, jobs: int, announce: Callable[[Item, int], None]) -> tuple[int | None, list[Item]]:
    """``work(item, job)`` for each item in order on up to ``jobs`` threads (``job``: the free job number it runs
    in); ``finish(item, result)`` runs in this thread, one item at a time (the one writer of shared files), and
    returns a signal number that stops everything, or None. After a signal (the runner's, or one that stopped a
    child) the runner passes it to every running child, no item starts, and the running ones are waited for.
    Returns ``(that signal or None, the items never started)``."""
    queue, free = list(items), list(range(jobs))
    running: dict = {}  # future -> (item, job)
    stopped: int | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            stopped = stopped or getattr(runner, "signal", None)
            while queue and free and not stopped:
                item, job = queue.pop(0), free.pop(0)
                announce(item, job)
                running[pool.submit(work, item, job)] = (item, job)
            if not running:
                return stopped, queue
            # A timeout returns this thread to Python now and then, where the signal handler runs.
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                item, job = running.pop(future)
                free.append(job)
                received = finish(item, future.result())
                if received and not stopped:
                    stopped = received
                    forward = getattr(runner, "forward", None)
                    if forward and not getattr(runner, "signal", None):
                        forward(received, None)  # a child stopped by a signal stops the sweep: the others too

"""What this machine is: its usable cores, CPU name, library versions and GPU (for run records and bench reports);
where a result came from (:func:`provenance`: version, git commit, machine, precision, command)."""

from __future__ import annotations

import functools
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def machine(device: str) -> dict:
    """CPU, thread count, library versions and (on CUDA) the GPU of this run."""
    import torch
    import transformers

    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


@functools.lru_cache(maxsize=1)
def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout this package's source files are tracked in; ``(None, None)`` for an
    installed copy (even one inside some repository, e.g. a venv in a checkout) or without git."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    # The commit of this source only if git tracks it here: a copy in site-packages lies in no checkout's index.
    tracked = git("ls-files", "--error-unmatch", "--", Path(__file__).name)
    head = git("rev-parse", "HEAD") if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return None, None
    # Uncommitted changes to tracked files: the commit alone does not name the code that ran.
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.stdout.strip(), None if status is None or status.returncode != 0 else bool(status.stdout.strip())


def provenance(device: str | None, precision: str | None) -> dict:
    """Where a result came from: the stepjepa version, its git commit (None outside a checkout) and whether the
    checkout had uncommitted changes, this machine (``device`` None: the CPU's name only, without importing
    torch), the precision and the command line."""
    from stepjepa import __version__

    commit, dirty = git_commit()
    return {"stepjepa_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "machine": {"cpu": _cpu_name()} if device is None else machine(device), "precision": precision,
            "command": command_line()}


def command_line() -> str:
    """This process's command line, shell-quoted; ``python -m stepjepa ...`` as such (its argv[0] is __main__.py)."""
    argv = sys.argv
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "stepjepa":
        argv = [sys.executable, "-m", "stepjepa", *argv[1:]]
    return shlex.join(argv)

"""One training run per output directory: a lock file held (flock) for the run's life.

The kernel drops an flock when its process dies, so a lock file left by a killed run is stale as soon as
nobody holds it; the next run takes it over and says so. The file holds the holder's process id.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stepjepa.core.errors import UsageError

LOCK_NAME = ".stepjepa.lock"


class DirectoryInUse(UsageError):
    """A live process holds the directory's lock; ``holder``: the process id it wrote there."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(f"--output_dir {directory} is in use by another run (process {holder}); "
                         "wait for it to end or choose another directory")
        self.directory, self.holder = directory, holder


def _open_held(lock: Path) -> int:
    """A descriptor of ``lock`` holding its exclusive flock; raises when a live process holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DirectoryInUse(lock.parent, holder) from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # The holder released and removed the file between our open and flock: lock the new file.
        os.close(fd)


@contextmanager
def output_dir_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold ``directory/.stepjepa.lock`` for the block; a directory this call created is removed if left empty."""
    path = Path(directory)
    created = not path.exists()
    lock = path / LOCK_NAME
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = _open_held(lock)
    except OSError as exc:
        raise UsageError(f"--output_dir {path}: cannot write there ({exc.strerror})") from None
    previous = os.read(fd, 64).decode("ascii", "replace").strip()
    if previous:
        print(f"note: took over the lock of process {previous}, which no longer runs ({lock})", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)
        if created:
            try:
                path.rmdir()  # only succeeds when the run wrote nothing there
            except OSError:
                pass

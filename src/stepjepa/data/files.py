"""Output files: the one atomic writer (a temporary file renamed into place) and plain file modes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepjepa.core.errors import UsageError
from stepjepa.data.jsonl import json_line


def plain_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (mkstemp's own is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def give_plain_modes(directory: str | os.PathLike, pattern: str = "*.safetensors") -> None:
    """Weights that safetensors wrote with mode 0600 get ``plain_file_mode()``, like every other output."""
    for path in Path(directory).glob(pattern):
        os.chmod(path, plain_file_mode())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` only if the block succeeds,
    removed otherwise, so ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, plain_file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows as JSON Lines through :func:`atomic_path`; returns the row count."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json_line(row))
            count += 1
    return count


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write one indented JSON document through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lies_in(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` (the same file, links followed) or lies somewhere under it."""
    inner, outer = inner.resolve(), outer.resolve()
    if inner == outer or outer in inner.parents:
        return True
    try:
        return os.path.samefile(inner, outer)
    except OSError:
        return False


def check_outputs_apart(outputs: dict[str, str | os.PathLike], inputs: dict[str, str | os.PathLike]) -> None:
    """Refuse (UsageError) a command whose output (a file, or a directory it writes in) is one of its inputs or
    holds one: writing it would overwrite what the command reads. Keys name each path for the message (its flag);
    inputs that do not exist (a hub id) are not files of this machine and pass."""
    for out_name, out in outputs.items():
        for in_name, inp in inputs.items():
            if Path(inp).exists() and _lies_in(Path(inp), Path(out)):
                relation = "is" if Path(inp).resolve() == Path(out).resolve() else "holds"
                raise UsageError(f"{out_name} {out} {relation} {in_name} {inp}: the command would overwrite "
                                 f"its own input; write to another path")

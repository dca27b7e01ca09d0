"""Chat JSONL files: reading, checking roles and content, atomic writing."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from stepjepa.errors import UsageError

# The reference Step-JEPA system prompt: step by step, blank-line separated steps, boxed answer.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that solves math problems step by step. "
    "Separate each reasoning step with a blank line. "
    "Put the final answer in \\boxed{}."
)

ROLES = ("system", "user", "assistant")


def json_line(value: Any) -> str:
    """One JSON Lines row (strict JSON: NaN raises); U+2028/U+2029 escaped so that no reader splitting on
    Unicode line breaks cuts a row."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """``(line_number, value)`` for every non-blank line; bad UTF-8 or JSON raises with its line number."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    rows = []
    # Split bytes on "\n" only, as JSON Lines does: U+2028 inside a string is not a line end.
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig")  # -sig: a byte-order mark from Windows editors is not JSON
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                             f"{exc.start + 1})") from None
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    if not rows:
        raise UsageError(f"{path}: file is empty")
    return rows


def chat_problem(row: Any) -> str | None:
    """What is wrong with one chat row, or None: messages are system?, user, assistant with string content."""
    if not isinstance(row, dict) or "messages" not in row:
        return "no 'messages' field"
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "'messages' is not a non-empty list"
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return "a message lacks 'role' or 'content'"
        if not isinstance(message["content"], str):
            return f"{message['role']} content is not a string"
        if not message["content"].strip():
            return f"{message['role']} content is empty"
    roles = [m["role"] for m in messages]
    if roles not in (["system", "user", "assistant"], ["user", "assistant"]):
        return f"roles are {roles}, expected [system,] user, assistant"
    return None


def load_chats(path: str | os.PathLike) -> list[list[dict[str, str]]]:
    """The messages of every row of a chat JSONL file; the first bad row raises with its line number."""
    chats = []
    for number, row in read_jsonl(path):
        problem = chat_problem(row)
        if problem:
            raise UsageError(f"{path}:{number}: {problem}")
        chats.append([{"role": m["role"], "content": m["content"]} for m in row["messages"]])
    return chats


def plain_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (mkstemp's own is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def give_plain_modes(directory: str | os.PathLike, pattern: str = "*.safetensors") -> None:
    """Weights that safetensors wrote with mode 0600 get ``plain_file_mode()``, like every other output."""
    for path in Path(directory).glob(pattern):
        os.chmod(path, plain_file_mode())


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows to a temporary file beside ``path`` and rename it into place; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, plain_file_mode())
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json_line(row))
                count += 1
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return count


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write one JSON document atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, plain_file_mode())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def append_jsonl(path: str | os.PathLike, row: Any) -> None:
    """Append one whole line (a single write, flushed and synced) so a crash never leaves half a row."""
    line = json_line(row).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)

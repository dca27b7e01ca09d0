"""Faults of the tokenized-row cache (issue 24): a file changed while it is tokenized is never cached under the
hash of other bytes; a cut or overwritten entry is rebuilt, with one line saying why; entries get plain modes;
SIGINT/SIGTERM while datasets' workers tokenize ends with one line, status 130/143, no worker or staging left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stepjepa.cli import run_command
from stepjepa.core.examples import build_rows
from stepjepa.data import cache as dataset_cache
from stepjepa.data import load_chats
from stepjepa.data.cache import RowSettings, packed_rows
from stepjepa.models import load_tokenizer

STEP = RowSettings("step_jepa", (), None, 512, "first")


def entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def train_argv(chat_file: Path, model: Path, tmp_path: Path, *extra: str) -> list[str]:
    """`train --debug 7`: tokenizes (or reads the cache), prints the first batch, trains nothing."""
    return ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(model), "--output_dir",
            str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--debug", "7", *extra]


def fresh_ids(chat_file: Path, model: Path) -> list[list[int]]:
    """The token ids of the file's rows packed without the cache (the oracle)."""
    rows, _ = build_rows(load_tokenizer(str(model)), load_chats(chat_file), RowSettings("step_jepa", [], None, 512, "first"))
    return [row["input_ids"] for row in rows]


def cached_ids(chat_file: Path, model: Path, cache: Path) -> list[list[int]]:
    packed = packed_rows(chat_file, load_tokenizer(str(model)), str(model), STEP, cache_dir=cache)
    assert packed.cache_hit
    return [packed.row(i)["input_ids"] for i in range(len(packed.dataset))]


def test_a_file_changed_while_it_is_tokenized_is_not_cached(tiny_model_dirs, chat_file, tmp_path, monkeypatch,
                                                            capsys) -> None:
    """The file is edited after it was hashed and planned, while its rows are made (sed -i during tokenizing).
    Before: the edited rows were stored under the original content's hash, and every later run on the original
    file trained on them. Now: one line, status 2, nothing cached; the run on the restored file builds anew."""
    model, original = tiny_model_dirs["gpt2"], chat_file.read_text()
    edited = original.translate(str.maketrans("0123456789", "1234567890"))  # other numbers, same byte length
    assert edited != original and len(edited) == len(original)
    real_plan = dataset_cache.plan_shards

    def plan_then_edit(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        chat_file.write_text(edited)
        return planned

    monkeypatch.setattr(dataset_cache, "plan_shards", plan_then_edit)
    assert run_command("train", train_argv(chat_file, model, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{chat_file} changed while it was read" in err, err
    assert entries(tmp_path / "cache") == []

    monkeypatch.setattr(dataset_cache, "plan_shards", real_plan)
    chat_file.write_text(original)
    assert run_command("train", train_argv(chat_file, model, tmp_path)) == 0
    assert "tokenized by 1 process" in capsys.readouterr().out
    assert cached_ids(chat_file, model, tmp_path / "cache") == fresh_ids(chat_file, model)


def test_rows_tokenized_only_from_the_bytes_of_the_key(tiny_model_dirs, chat_file, tmp_path) -> None:
    """A digest given by the caller (train's run record) that is not the file's content stores nothing."""
    tokenizer = load_tokenizer(str(tiny_model_dirs["gpt2"]))
    with pytest.raises(ValueError, match="changed while it was read"):
        packed_rows(chat_file, tokenizer, "gpt2", STEP, cache_dir=tmp_path / "cache", data_sha256="0" * 64)
    assert entries(tmp_path / "cache") == []


def cut_after_schema(arrow: Path) -> None:
    """Cut the Arrow stream at a record-batch boundary: its schema is kept, its batches are dropped."""
    import pyarrow as pa

    with pa.memory_map(str(arrow)) as source:
        pa.ipc.open_stream(source)
        boundary = source.tell()
    os.truncate(arrow, boundary)


def overwrite_token_ids(arrow: Path, ids: list[int]) -> None:
    """Overwrite the first row's first token ids (int32, as stored) with an id past any vocabulary."""
    data = arrow.read_bytes()
    stored = np.asarray(ids[:8], dtype="<i4").tobytes()
    assert stored in data  # the values buffer holds the rows' ids in order: the first match is row 0's
    arrow.write_bytes(data.replace(stored, np.full(8, 10**6, dtype="<i4").tobytes(), 1))


@pytest.mark.parametrize("damage", ["cut at a batch boundary", "token ids overwritten"])
def test_a_damaged_entry_is_rebuilt_with_one_line(tiny_model_dirs, chat_file, tmp_path, capsys, damage) -> None:
    """Before: a cut entry was a hit with fewer rows (here none: a wrong 'no assistant token' error), and
    overwritten ids were trusted until an IndexError in training."""
    model = tiny_model_dirs["gpt2"]
    assert run_command("train", train_argv(chat_file, model, tmp_path)) == 0
    (entry,) = entries(tmp_path / "cache")
    (arrow,) = entry.glob("*.arrow")
    if damage.startswith("cut"):
        cut_after_schema(arrow)
    else:
        overwrite_token_ids(arrow, fresh_ids(chat_file, model)[0])
    capsys.readouterr()
    assert run_command("train", train_argv(chat_file, model, tmp_path)) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "data cache" in line]
    assert len(notes) == 1, captured.err
    assert notes[0].startswith(f"note: data cache entry {entry} is damaged ({arrow.name} ")
    assert notes[0].endswith(f"); tokenizing {chat_file} again")
    assert "tokenized by 1 process" in captured.out and "(hit)" not in captured.out
    assert cached_ids(chat_file, model, tmp_path / "cache") == fresh_ids(chat_file, model)


def test_cache_entries_get_the_mode_of_a_plain_directory(tiny_model_dirs, chat_file, tmp_path) -> None:
    """Before: 0700 (mkdtemp's), whatever the umask."""
    previous = os.umask(0o022)
    try:
        assert run_command("train", train_argv(chat_file, tiny_model_dirs["gpt2"], tmp_path)) == 0
    finally:
        os.umask(previous)
    (entry,) = entries(tmp_path / "cache")
    assert entry.stat().st_mode & 0o777 == 0o755
    assert {path.stat().st_mode & 0o777 for path in entry.iterdir()} == {0o644}


# The command in a child process, each tokenizing task (a shard of 2 kB) slowed to 0.4 s, so that the signal
# arrives while datasets' two worker processes (and its manager process) are busy.
SLOW_TOKENIZING = """
import sys, time
from stepjepa.data import cache
real = cache._pack_shards
def slow(*args, **kwargs):
    time.sleep(0.4)
    return real(*args, **kwargs)
cache._pack_shards = slow
cache.SHARD_BYTES = 2000
from stepjepa.cli import main
sys.exit(main(sys.argv[1:]))
"""


def session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_a_signal_while_workers_tokenize_stops_them_with_one_line(tiny_model_dirs, tiny_chats, tmp_path, signum,
                                                                 to_group) -> None:
    """SIGTERM to the command (a job scheduler) or SIGINT to its whole process group (Ctrl-C in a terminal).
    Before: SIGTERM ended it with 143 and no line, its three child processes hanging forever and the staging
    directory left; Ctrl-C printed a traceback from each worker."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in tiny_chats * 3))  # ~15 kB: 8 shards
    cache = tmp_path / "cache"
    argv = [sys.executable, "-c", SLOW_TOKENIZING, "train", *train_argv(data, tiny_model_dirs["gpt2"], tmp_path),
            "--num_proc", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.name.startswith(".") for p in entries(cache)):
            time.sleep(0.05)
        time.sleep(1.0)  # the pool's workers start and take their first shards
        assert proc.poll() is None, proc.communicate()
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        deadline = time.time() + 10
        while session_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not session_alive(proc.pid)  # no worker left
    finally:
        if session_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err
    assert err.splitlines()[-1] == (f"stepjepa train: interrupted by {signal.Signals(signum).name} while tokenizing "
                                    f"{data}; nothing was cached")
    assert "Traceback" not in err, err
    assert entries(cache) == []  # no staging directory left

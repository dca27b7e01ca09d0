"""One run per output directory: a held lock refuses a second run; a dead run's lock is taken over."""

from __future__ import annotations

import os
import subprocess
import sys

from stepjepa.cli import main
from stepjepa.training.runlock import LOCK_NAME, output_dir_lock


def train(chat_file, model_dir, out, *extra: str) -> list[str]:
    return ["train", "--train_file", str(chat_file), "--model_name", str(model_dir), "--output_dir", str(out),
            "--max_steps", "2", "--batch_size", "2", "--debug", "1", *extra]


def test_second_run_into_a_locked_directory_is_refused(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    # The first run: another process holding the lock while it trains.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom stepjepa.training.runlock import output_dir_lock\n"
         f"with output_dir_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        (out / "metrics.jsonl").write_text("")  # what the first run has written so far
        before = sorted(os.listdir(out))
        assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--overwrite_output_dir")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"--output_dir {out} is in use by another run (process {holder.pid})" in err
        assert sorted(os.listdir(out)) == before and (out / LOCK_NAME).read_text() == f"{holder.pid}\n"
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_dead_run_is_taken_over(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    # A run killed with -9 leaves its lock file, held by nobody.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout)
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--overwrite_output_dir")) == 0
    err = capsys.readouterr().err
    assert f"note: took over the lock of process {dead.stdout.strip()}, which no longer runs" in err
    assert not (out / LOCK_NAME).exists()  # released at the end
    assert (out / "train_summary.json").is_file()


def test_lock_is_released_and_a_directory_it_created_is_removed_if_empty(tmp_path):
    out = tmp_path / "new" / "out"
    with output_dir_lock(out):
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert not out.exists()
    out.mkdir()
    with output_dir_lock(out):
        (out / "kept.txt").write_text("x")
    assert sorted(os.listdir(out)) == ["kept.txt"]

"""Sweep faults (issue 24): YAML values of the wrong type are refused in one line, not coerced or a traceback;
a rerun never deletes the files of a run whose lock a live process holds."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

import pytest

from stepjepa.cli import run_command
from stepjepa.training.runlock import LOCK_NAME


@pytest.fixture
def data_files(tmp_path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    row = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}
    for path in (train, test):
        path.write_text(json.dumps(row) + "\n")
    return train, test


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("seeds: [1.9, 2.2]", "--seeds: expected int values, got 1.9, 2.2"),
    ("seeds: true", "--seeds: expected int values, got True"),
    ("lbd: true", "--lbd: expected float values, got True"),
    ("lbd: [0.1, false]", "--lbd: expected float values, got False"),
    ("predictors: 2.7", "--predictors: expected int values, got 2.7"),
    ("modes: [1]", "--modes: expected str values, got 1"),
    ("target_stop_grad: [1]", "--target_stop_grad: expected true or false, got 1"),
    ("jobs: true", "jobs must be a int, got True"),
    ("max_examples: 2.5", "max_examples must be a int, got 2.5"),
    ("1: 2\nseeds: [1]", "keys must be flag names, got 1"),
    ("seeds: [1]\n2: x\nno_such: 3", "keys must be flag names, got 2"),
])
def test_yaml_values_of_the_wrong_type_are_refused_in_one_line(data_files, tmp_path, capsys, yaml_text,
                                                                message) -> None:
    """Before: 1.9 -> 1, true -> 1 / 1.0, 2.7 -> 2 (the sweep ran other runs than written); mixed integer and
    string keys -> TypeError traceback from sorting them."""
    preset = tmp_path / "sweep.yaml"
    preset.write_text(yaml_text + "\n")
    train, test = data_files
    argv = ["--config", str(preset), "--train_file", str(train), "--test_file", str(test), "--output_dir",
            str(tmp_path / "s"), "--dry_run"]
    assert run_command("sweep", argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert not (tmp_path / "s").exists()


def test_yaml_values_of_the_right_type_still_pass(data_files, tmp_path, capsys) -> None:
    preset = tmp_path / "sweep.yaml"
    preset.write_text("seeds: [3, 4]\nlbd: [1, 0.5]\npredictors: 2\ntarget_stop_grad: [true, 'no']\n"
                      "max_examples: null\njobs: 1\nmodes: [step_jepa]\n")
    train, test = data_files
    argv = ["--config", str(preset), "--train_file", str(train), "--test_file", str(test), "--output_dir",
            str(tmp_path / "s"), "--dry_run", "--no_base"]
    assert run_command("sweep", argv) == 0
    out = capsys.readouterr().out
    # 2 seeds x 2 weights x 2 stop-gradient settings, named by their values as written.
    assert "8 runs in" in out and "_lbd1_k2_" in out and "lbd0.5_k2" in out and "seed4" in out


def recording_launcher(tmp_path: Path) -> str:
    """A launcher that records each command it is given and exits 3 (no training)."""
    script = tmp_path / "launcher.py"
    script.write_text("import json, sys\n"
                      f"with open({str(tmp_path / 'launched.jsonl')!r}, 'a') as f: f.write(json.dumps(sys.argv) + '\\n')\n"
                      "sys.exit(3)\n")
    return f"{sys.executable} {script}"


def test_a_rerun_never_deletes_files_of_a_run_whose_lock_is_held(data_files, tmp_path, capsys) -> None:
    """A killed sweep's child still trains in regular_seed1 (it holds the lock): the rerun skips that run in one
    line, deletes nothing there and goes on with the others. Before: its metrics.jsonl was deleted, then the
    new child failed on the lock."""
    out = tmp_path / "s"
    run_dir = out / "regular_seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 10}\n')
    (run_dir / "eval.jsonl").write_text('{"index": 0}\n')
    lock = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: the sweep's flock conflicts with it
        os.write(lock, b"4242\n")
        train, test = data_files
        argv = ["--modes", "regular", "--seeds", "1", "2", "--train_file", str(train), "--test_file", str(test),
                "--output_dir", str(out), "--no_base", "--no_probe", "--launcher", recording_launcher(tmp_path)]
        assert run_command("sweep", argv) == 1
    finally:
        os.close(lock)
    err = capsys.readouterr().err
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 10}\n'
    assert (run_dir / "eval.jsonl").read_text() == '{"index": 0}\n'
    # One line says why the run was skipped; the final line lists it among the runs to retry.
    assert sum("regular_seed1" in line for line in err.splitlines()) == 2
    assert "stepjepa sweep: regular_seed1 skipped: process 4242 still runs in" in err
    launched = [json.loads(line) for line in (tmp_path / "launched.jsonl").read_text().splitlines()]
    assert [call[call.index("--output_dir") + 1] for call in launched] == [str(out / "regular_seed2")]


def test_numbers_pyyaml_reads_as_words_still_pass(data_files, tmp_path, capsys) -> None:
    """PyYAML (YAML 1.1) reads 1e-3 as a string; it is still the number written."""
    preset = tmp_path / "sweep.yaml"
    preset.write_text("lbd: [1e-3]\nseeds: ['5']\nmodes: [step_jepa]\n")
    train, test = data_files
    argv = ["--config", str(preset), "--train_file", str(train), "--test_file", str(test), "--output_dir",
            str(tmp_path / "s"), "--dry_run", "--no_base"]
    assert run_command("sweep", argv) == 0
    assert "step_jepa_lbd0.001_k0_cosine_seed5" in capsys.readouterr().out

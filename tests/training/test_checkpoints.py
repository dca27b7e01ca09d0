"""Checkpoints through `stepjepa train`: incomplete ones skipped, other runs' refused and never rotated,
a finished run resumed trains nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stepjepa.cli import main
from stepjepa.training.rundir import RUN_RECORD


def train(chat_file, model_dir, out: Path, *extra: str) -> list[str]:
    return ["train", "--train_file", str(chat_file), "--model_name", str(model_dir), "--output_dir", str(out),
            "--batch_size", "2", "--logging_steps", "1", "--save_steps", "1", "--debug", "1", *extra]


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoints(out: Path) -> list[str]:
    return sorted(path.name for path in out.glob("checkpoint-*"))


@pytest.mark.slow
def test_latest_skips_partial_checkpoints_and_other_names(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "2")) == 0
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2"]
    # A save cut short after the config (kill -9), one with the weights but no trainer state (a full disk),
    # and a folder whose name is not a step.
    (out / "checkpoint-3").mkdir()
    shutil.copy(out / "checkpoint-2" / "config.json", out / "checkpoint-3")
    (out / "checkpoint-4").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(out / "checkpoint-2" / name, out / "checkpoint-4")
    shutil.copytree(out / "checkpoint-1", out / "checkpoint-best")
    capsys.readouterr()

    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "5",
                      "--resume_from_checkpoint", "latest")) == 0
    err = capsys.readouterr().err
    assert f"note: skipped incomplete {out / 'checkpoint-4'} (no trainer_state.json: its save did not finish)" in err
    assert f"note: skipped incomplete {out / 'checkpoint-3'} (no trainer_state.json" in err
    assert steps(out) == [1, 2, 3, 4, 5]  # resumed from step 2, each step logged once
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 5
    # Rotation (--save_total_limit 2) kept this run's newest two; the odd name is not a checkpoint, so kept.
    assert checkpoints(out) == ["checkpoint-4", "checkpoint-5", "checkpoint-best"]


def test_only_partial_checkpoints_is_one_line(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "config.json").write_text("{}")
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--resume_from_checkpoint", "latest")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no complete checkpoint in {out} (checkpoint-3: no trainer_state.json" in err


@pytest.mark.slow
def test_another_runs_checkpoints_are_neither_rotated_nor_resumed(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "3", "--seed", "1")) == 0
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-3"]
    first = json.loads((out / "checkpoint-3" / RUN_RECORD).read_text())

    # Another seed into the same directory, keeping one checkpoint: it rotates its own checkpoint-1 only.
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "2", "--seed", "2",
                      "--save_total_limit", "1", "--overwrite_output_dir")) == 0
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-3"]
    assert json.loads((out / "checkpoint-3" / RUN_RECORD).read_text()) == first
    assert json.loads((out / "checkpoint-2" / RUN_RECORD).read_text())["seed"] == 2
    capsys.readouterr()

    # `latest` is the seed-1 run's checkpoint-3: refused for the seed-2 run, nothing trained or changed.
    before = (out / "metrics.jsonl").read_text()
    assert main(train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "4", "--seed", "2",
                      "--resume_from_checkpoint", "latest")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{out / 'checkpoint-3'} belongs to another run (seed 1 there, 2 here)" in err
    assert (out / "metrics.jsonl").read_text() == before
    assert checkpoints(out) == ["checkpoint-2", "checkpoint-3"]


@pytest.mark.slow
def test_resuming_a_finished_run_trains_nothing(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = train(chat_file, tiny_model_dirs["gpt2"], out, "--max_steps", "2")
    assert main(argv) == 0
    summary = (out / "train_summary.json").read_text()
    model_time = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()

    assert main([*argv, "--resume_from_checkpoint", "latest"]) == 0
    assert f"run already finished: {out / 'checkpoint-2'} is its last step; nothing to train" in capsys.readouterr().out
    assert steps(out) == [1, 2]
    assert (out / "train_summary.json").read_text() == summary
    assert (out / "model.safetensors").stat().st_mtime_ns == model_time
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2"]

    # Stopped after its last checkpoint but before the model was saved: the model comes from that checkpoint.
    for name in ("train_summary.json", "model.safetensors"):
        (out / name).unlink()
    assert main([*argv, "--resume_from_checkpoint", "latest"]) == 0
    assert "saving its model" in capsys.readouterr().out
    assert steps(out) == [1, 2]
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2
    saved = (out / "model.safetensors").read_bytes()
    assert saved == (out / "checkpoint-2" / "model.safetensors").read_bytes()

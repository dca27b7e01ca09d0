"""Interruption and resumption: SIGTERM saves a checkpoint; resuming gives the uninterrupted run's losses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three training processes, one stopped by a signal

ROOT = Path(__file__).resolve().parents[2]


def train_cmd(model_dir, chat_file, out, *extra):
    return [sys.executable, str(ROOT / "finetune_step_jepa_adapted.py"), "--train_file", str(chat_file),
            "--step_jepa", "--predictors", "1", "--jepa_ratio", "0.5", "--model_name", str(model_dir),
            "--output_dir", str(out), "--max_steps", "40", "--batch_size", "2", "--logging_steps", "1",
            "--save_steps", "1000", "--num_epochs", "100", "--debug", "1", *extra]


def losses(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["lm_loss"], r["jepa_loss"], r["loss"], r["learning_rate"]) for r in rows]


def test_sigterm_checkpoint_then_resume_matches_uninterrupted(tiny_model_dirs, chat_file, tmp_path):
    model_dir = tiny_model_dirs["gpt2"]
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(train_cmd(model_dir, chat_file, interrupted), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint saved at step" in err
    checkpoints = list(interrupted.glob("checkpoint-*"))
    assert len(checkpoints) == 1
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 5 <= stopped_at < 40, "the run must have been stopped mid-way"
    assert not (interrupted / "model.safetensors").exists()

    resumed = subprocess.run(train_cmd(model_dir, chat_file, interrupted, "--resume_from_checkpoint", "latest"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = tmp_path / "straight"
    done = subprocess.run(train_cmd(model_dir, chat_file, straight), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    got, want = losses(interrupted), losses(straight)
    assert [row[0] for row in got] == list(range(1, 41))
    assert got == want
    assert any(row[2] is None for row in want) and any(row[2] is not None for row in want)  # jepa_ratio 0.5 draws both

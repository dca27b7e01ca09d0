"""Two processes on the CPU (gloo): different data per rank, losses reduced over ranks, one saved model."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import free_port

pytestmark = pytest.mark.slow  # torchrun: two training processes


def test_torchrun_two_processes_step_jepa(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "stepjepa", "train", "--train_file", str(chat_file), "--step_jepa", "--predictors", "1",
           "--lbd", "0.5", "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out),
           "--max_steps", "3", "--batch_size", "2", "--logging_steps", "1", "--debug", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    firsts = dict(re.findall(r"rank (\d)/2: first batch \S+ \S+, token-id sum (\d+)", done.stdout))
    assert set(firsts) == {"0", "1"} and firsts["0"] != firsts["1"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        # The Trainer's loss is averaged over ranks; lm/jepa must be too for the identity to hold.
        assert row["loss"] == pytest.approx(row["lm_loss"] + 0.5 * row["jepa_loss"], rel=1e-5)
        # The collapse sums were reduced over both ranks (a sum of the same shape on each) before the statistics.
        assert -1 <= row["view_b_mean_cosine"] <= 1 and row["view_a_dim_std"] >= 0
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 3

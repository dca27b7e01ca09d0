"""scripts/paper_nlrx.sh for real on a tiny model and eight NL-RX rows: a regular and an LLM-JEPA run, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NLRX, nlrx_row

pytestmark = pytest.mark.slow  # a shell script: two trainings, evaluations and a report in child processes

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "paper_nlrx.sh"


def test_paper_nlrx_runs_regular_and_llm_jepa_with_the_regex_task(tmp_path, tiny_model_dirs) -> None:
    data = tmp_path / "nlrx"
    data.mkdir()
    rows = [nlrx_row(q, r) for q, r in NLRX * 2]
    for name in ("synth_train.jsonl", "synth_test.jsonl"):
        (data / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    env = {**os.environ, "NLRX_DIR": str(data), "MODEL": str(tiny_model_dirs["llama"]), "SEEDS": "3", "EPOCHS": "1",
           "BATCH": "4", "GRAD_ACCUM": "1", "OUT": str(out),
           "SWEEP_ARGS": "--no_base --no_probe", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ledger = [json.loads(line) for line in (out / "sweep" / "ledger.jsonl").read_text().splitlines()]
    runs = {entry["run"]: entry for entry in ledger}
    assert set(runs) == {"regular_seed3", "llm_jepa_lbd1_k1_cosine_seed3"}
    for name in ("regular_seed3", "llm_jepa_lbd1_k1_cosine_seed3"):
        assert runs[name]["task"] == "regex" and runs[name]["total_examples"] == 8
        # 8 rows in batches of 4, one epoch: two optimiser updates.
        assert runs[name]["global_step"] == 2
    train = json.loads((out / "sweep" / "llm_jepa_lbd1_k1_cosine_seed3" / "train_summary.json").read_text())
    assert (train["mode"], train["predictors"], train["config"]["lbd"]) == ("llm_jepa", 1, 1.0)
    assert "Task `regex`" in (out / "sweep" / "report.md").read_text()

"""`stepjepa sweep --task`: passed to every evaluation, checked before any run, recorded in the ledger and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NLRX, nlrx_row

from stepjepa.experiments.config import ReportConfig, SweepConfig
from stepjepa.experiments.ledger import ledger_entry
from stepjepa.experiments.report import run_report
from stepjepa.experiments.sweep import run_sweep
from stepjepa.experiments.sweep_children import eval_command
from stepjepa.experiments.sweep_grid import Run


@pytest.fixture
def nlrx_files(tmp_path) -> tuple[Path, Path]:
    path = tmp_path / "nlrx.jsonl"
    path.write_text("".join(json.dumps(nlrx_row(q, r)) + "\n" for q, r in NLRX))
    return path, path


def config(files, tmp_path, **overrides) -> SweepConfig:
    values = dict(train_file=str(files[0]), test_file=str(files[1]), output_dir=str(tmp_path / "sweep"),
                  model_name="m", modes=["regular"], seeds=[1], no_base=True, no_probe=True)
    return SweepConfig(**{**values, **overrides})


def never(argv: list[str]) -> int:
    raise AssertionError(f"nothing should run, got {argv}")


def test_task_reaches_every_evaluation(nlrx_files, tmp_path) -> None:
    cfg = config(nlrx_files, tmp_path, task="regex")
    argv = eval_command(cfg, tmp_path / "run")
    assert argv[argv.index("--task") + 1] == "regex"
    assert "--task" not in eval_command(config(nlrx_files, tmp_path), tmp_path / "run")
    assert cfg.fixed_settings()["task"] == "regex"


def test_task_is_the_sweeps_flag_and_is_checked_before_any_run(nlrx_files, tmp_path) -> None:
    with pytest.raises(ValueError, match="--eval_args may not set --task"):
        config(nlrx_files, tmp_path, eval_args="--task regex")
    with pytest.raises(ValueError, match="--task must be one of gsm8k, exact_match, regex, got 'regexp'"):
        run_sweep(config(nlrx_files, tmp_path, task="regexp"), runner=never)


def test_ledger_of_another_task_is_refused(nlrx_files, tmp_path) -> None:
    cfg = config(nlrx_files, tmp_path, task="exact_match")
    entry = ledger_entry(cfg, Run("regular", 1), {"global_step": 2},
                         {"accuracy": 0.5, "strict_accuracy": 0.5, "correct": 2, "total_examples": 4,
                          "task": "exact_match"}, 1.0)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "ledger.jsonl").write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match="task='exact_match', this sweep has 'regex'"):
        run_sweep(config(nlrx_files, tmp_path, task="regex", seeds=[2]), runner=never)
    # The report says what its two scores mean for the ledger's task.
    run_report(ReportConfig(runs_dir=str(tmp_path / "sweep")))
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "Task `exact_match`: accuracy and strict are both exact match" in report

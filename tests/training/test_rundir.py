"""RunDir: the names of a run directory, which checkpoints count, and when a summary says this run finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepjepa.cli import run_command
from stepjepa.core.errors import UsageError
from stepjepa.training.rundir import RunDir, read_record

RECORD = {"mode": "regular", "model": "/m", "train_file_sha256": "ab", "predictors": 0, "seed": 1, "lora": False,
          "run_id": "r1"}


def checkpoint(root: Path, step: int, record: dict | None = RECORD, state: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10}))
    if record is not None:
        (path / "stepjepa_run.json").write_text(json.dumps(record))
    return path


def test_checkpoints_in_step_order_and_only_checkpoint_n_folders(tmp_path):
    for step in (10, 9, 100):
        checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-best").mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a checkpoint")
    assert [step for step, _ in RunDir(tmp_path).checkpoints()] == [9, 10, 100]  # numeric, not 10 < 100 < 9


def test_newest_complete_skips_cut_saves_with_why(tmp_path):
    whole = checkpoint(tmp_path, 1)
    checkpoint(tmp_path, 2, record=None)  # state written, record not yet
    checkpoint(tmp_path, 3, state=False)  # a record left beside a cut save: no trainer state, not whole
    newest, skipped = RunDir(tmp_path).newest_complete()
    assert newest == whole
    assert [(path.name, reason.split(":")[0]) for path, reason in skipped] == [
        ("checkpoint-3", "no trainer_state.json"), ("checkpoint-2", "no stepjepa_run.json")]


def test_latest_complete_without_a_whole_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no checkpoint-\\* in"):
        RunDir(tmp_path).latest_complete()
    checkpoint(tmp_path, 4, record=None)
    with pytest.raises(UsageError, match="no complete checkpoint .*checkpoint-4: no stepjepa_run.json"):
        RunDir(tmp_path).latest_complete()


def test_a_record_from_before_lora_was_recorded_takes_it_from_the_checkpoints_files(tmp_path):
    old = {key: value for key, value in RECORD.items() if key != "lora"}
    full, lora = checkpoint(tmp_path, 1, old), checkpoint(tmp_path, 2, old)
    (lora / "adapter_config.json").write_text("{}")
    assert read_record(full)["lora"] is False and read_record(lora)["lora"] is True


def finished_run(root: Path, run: dict | None = RECORD) -> RunDir:
    """A run directory with 10 bytes of weights, 4 of adapter weights, and a summary listing them."""
    rundir = RunDir(root)
    (root / "model.safetensors").write_bytes(b"0123456789")
    rundir.adapter.mkdir()
    (rundir.adapter / "adapter_model.safetensors").write_bytes(b"abcd")
    summary = {"global_step": 2, "weights": {"model.safetensors": 10, "adapter/adapter_model.safetensors": 4}}
    if run is not None:
        summary["run"] = run
    rundir.summary.write_text(json.dumps(summary))
    return rundir


def test_a_summary_finishes_only_its_own_run_with_its_weights_whole(tmp_path):
    rundir = finished_run(tmp_path)
    assert rundir.finished_summary(RECORD)["global_step"] == 2
    assert rundir.finished_summary({**RECORD, "run_id": "r2"}) is None  # another attempt in the same directory
    assert rundir.finished_summary({**RECORD, "lora": True}) is None  # same id, other identity: not this run
    (tmp_path / "model.safetensors").write_bytes(b"01234")  # a save cut short after the summary was written
    assert rundir.finished_summary(RECORD) is None
    (tmp_path / "model.safetensors").unlink()
    assert rundir.finished_summary(RECORD) is None


def test_a_summary_without_a_run_record_finishes_no_run(tmp_path):
    assert finished_run(tmp_path, run=None).finished_summary(RECORD) is None
    rundir = RunDir(tmp_path / "empty")
    assert rundir.finished_summary(RECORD) is None  # no summary at all


@pytest.mark.slow  # a training run
def test_a_training_run_writes_each_file_where_run_dir_names_it(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--regular", "--lora", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(out), "--max_steps", "2", "--save_steps", "1", "--batch_size", "2",
            "--logging_steps", "1", "--debug", "0"]
    assert run_command("train", argv) == 0
    rundir = RunDir(out)
    assert [json.loads(line)["step"] for line in rundir.metrics.read_text().splitlines()] == [1, 2]
    assert json.loads(rundir.config.read_text())["lora"] is True
    assert (rundir.adapter / "adapter_config.json").is_file() and not rundir.lock.exists()
    assert [path.name for _, path in rundir.checkpoints()] == ["checkpoint-1", "checkpoint-2"]
    newest, skipped = rundir.newest_complete()
    assert newest == rundir.checkpoint(2) and skipped == []
    summary = json.loads(rundir.summary.read_text())
    assert summary["run"]["run_id"] == read_record(newest)["run_id"]
    assert rundir.finished_summary(read_record(newest)) == summary
    assert summary["weights"] == {name: (out / name).stat().st_size
                                  for name in ("adapter/adapter_model.safetensors", "model.safetensors")}

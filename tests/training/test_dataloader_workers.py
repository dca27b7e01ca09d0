"""Batches collated in DataLoader worker processes (--dataloader_num_workers): the default by device, the Trainer's
data-loading arguments, and the same losses, straight and resumed, as batches collated in the training loop."""

from __future__ import annotations

import json

import pytest

from stepjepa.cli import run_command
from stepjepa.training.config import TrainConfig
from stepjepa.training.training_args import (
    CUDA_DATALOADER_WORKERS,
    accelerator_config,
    dataloader_workers,
    training_arguments,
)


@pytest.mark.parametrize("requested,cuda,expected", [
    (None, False, 0), (None, True, CUDA_DATALOADER_WORKERS), (2, False, 2), (0, True, 0),
])
def test_workers_default_by_device(requested, cuda, expected):
    assert dataloader_workers(requested, cuda) == expected
    assert CUDA_DATALOADER_WORKERS == 4


def test_cuda_copies_are_non_blocking_and_streams_are_not_dispatched():
    assert accelerator_config(streaming=False, cuda=False) == {}
    assert accelerator_config(streaming=False, cuda=True) == {"non_blocking": True}
    assert accelerator_config(streaming=True, cuda=True) == {"non_blocking": True, "dispatch_batches": False}


def test_the_trainers_arguments_on_the_cpu(tmp_path):
    """No pinned memory on the CPU; the Trainer's per-step NaN filter (a read-back every step) is off;
    --compile reaches torch_compile."""
    cfg = TrainConfig(train_file="x.jsonl", output_dir=str(tmp_path), dataloader_num_workers=2, compile=True)
    args = training_arguments(cfg, has_eval=False)
    assert args.dataloader_num_workers == 2 and args.dataloader_persistent_workers
    assert not args.dataloader_pin_memory and not args.logging_nan_inf_filter and args.torch_compile
    plain = training_arguments(TrainConfig(train_file="x.jsonl", output_dir=str(tmp_path)), has_eval=False)
    assert plain.dataloader_num_workers == 0 and not plain.torch_compile


def test_negative_workers_are_refused():
    with pytest.raises(ValueError, match="--dataloader_num_workers must be >= 0"):
        TrainConfig(train_file="x.jsonl", dataloader_num_workers=-1)


def metrics(out) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["lm_loss"], r["jepa_loss"], r["loss"], r["learning_rate"]) for r in rows]


def test_workers_train_and_resume_with_the_losses_of_the_loop(tiny_model_dirs, chat_file, tmp_path):
    """Six steps of Step-JEPA (JEPA dropout 0.5, so some steps are LM-only) collated in the loop and in two
    workers: the same losses at every step; a resume from the loop run's step 3 with two workers: its steps 4-6."""
    common = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--jepa_ratio", "0.5",
              "--model_name", str(tiny_model_dirs["gpt2"]), "--learning_rate", "1e-3", "--max_steps", "6",
              "--batch_size", "2", "--logging_steps", "1", "--save_steps", "3", "--debug", "0"]
    loop, workers, resumed = tmp_path / "loop", tmp_path / "workers", tmp_path / "resumed"
    assert run_command("train", [*common, "--output_dir", str(loop), "--dataloader_num_workers", "0"]) == 0
    assert run_command("train", [*common, "--output_dir", str(workers), "--dataloader_num_workers", "2"]) == 0
    assert run_command("train", [*common, "--output_dir", str(resumed), "--dataloader_num_workers", "2",
                                 "--resume_from_checkpoint", str(loop / "checkpoint-3")]) == 0
    want = metrics(loop)
    assert [row[0] for row in want] == [1, 2, 3, 4, 5, 6]
    assert any(row[2] is None for row in want) and any(row[2] is not None for row in want)
    assert metrics(workers) == want
    assert metrics(resumed) == want[3:]

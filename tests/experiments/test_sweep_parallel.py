"""Parallel sweeps (--jobs, --devices): runs at once, one environment per job, one ledger writer, interrupted
children resumed by a rerun."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_sweep import TINY_TRAIN, config, data_files, ledger  # noqa: F401  (data_files is a fixture)

from stepjepa.experiments.sweep import run_sweep
from stepjepa.machine import available_cores


class FakeChildren:
    """Stands in for the children: writes what each command must leave, records each call's environment and how
    many ran at once. ``interrupt``: the run whose training stops as if by SIGTERM after a whole checkpoint."""

    def __init__(self, delay: float = 0.1, interrupt: str | None = None) -> None:
        self.delay, self.interrupt = delay, interrupt
        self.calls: list[dict] = []
        self.active = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, argv: list[str], env: dict | None = None, log: Path | None = None) -> int:
        command = argv[argv.index("stepjepa") + 1]
        flag = "--output_dir" if command == "train" else "--output_file"
        path = Path(argv[argv.index(flag) + 1])
        run_dir = path if command == "train" else path.parent
        with self.lock:
            self.calls.append({"command": command, "run": run_dir.name, "env": env, "log": log, "argv": argv})
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
        run_dir.mkdir(parents=True, exist_ok=True)
        if command == "train" and run_dir.name == self.interrupt:
            checkpoint = run_dir / "checkpoint-1"
            checkpoint.mkdir()
            (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 1, "max_steps": 2}))
            (checkpoint / "stepjepa_run.json").write_text(json.dumps({"seed": 1, "run_id": "r"}))
            return 143
        if command == "train":
            (run_dir / "train_summary.json").write_text(json.dumps({"global_step": 2, "train_loss": 1.5,
                                                                     "runtime_s": 0.1}))
        else:
            (run_dir / "eval_summary.json").write_text(json.dumps({"accuracy": 0.5, "strict_accuracy": 0.5,
                                                                    "correct": 1, "total_examples": 2}))
        return 0

    def trained(self) -> list[str]:
        return [call["run"] for call in self.calls if call["command"] == "train"]


def test_two_jobs_run_at_once_with_split_threads_and_one_ledger(data_files, tmp_path):
    out = tmp_path / "s"
    cfg = config(data_files, out, modes=["regular"], seeds=[1, 2, 3, 4, 5], jobs=2)
    children = FakeChildren()
    assert run_sweep(cfg, children) == 0
    assert children.most == 2  # two at once, never more
    names = [f"regular_seed{seed}" for seed in (1, 2, 3, 4, 5)]
    assert sorted(children.trained()) == names
    entries = ledger(out)  # every line whole JSON (one writer)
    assert sorted(e["run"] for e in entries) == names and all(e["accuracy"] == 0.5 for e in entries)
    share = str(max(1, available_cores() // 2))
    assert {call["env"]["OMP_NUM_THREADS"] for call in children.calls} == {share}
    # Without --devices the GPUs the sweep was given are left as they are.
    assert {call["env"].get("CUDA_VISIBLE_DEVICES") for call in children.calls} == {os.environ.get("CUDA_VISIBLE_DEVICES")}
    # The two jobs' rendezvous ports differ (two torchrun launchers at once would collide on one).
    assert len({call["env"]["MASTER_PORT"] for call in children.calls}) == 2
    # Each run's train and evaluate write to its own log, in one job.
    for name in names:
        calls = [call for call in children.calls if call["run"] == name]
        assert [c["command"] for c in calls] == ["train", "evaluate"]
        assert {c["log"] for c in calls} == {out / "logs" / f"{name}.log"}
        assert calls[0]["env"]["MASTER_PORT"] == calls[1]["env"]["MASTER_PORT"]
    assert run_sweep(cfg, FakeChildren()) == 0  # all done: nothing runs again


def test_devices_give_each_job_its_gpus(data_files, tmp_path):
    cfg = config(data_files, tmp_path / "s", modes=["regular"], seeds=[1, 2, 3], devices="0+1,2+3")
    assert cfg.parallel_jobs == 2
    children = FakeChildren()
    assert run_sweep(cfg, children) == 0
    by_run = {}
    for call in children.calls:
        by_run.setdefault(call["run"], set()).add(call["env"]["CUDA_VISIBLE_DEVICES"])
    assert all(len(devices) == 1 for devices in by_run.values())  # train and evaluate on the same GPUs
    assert set().union(*by_run.values()) == {"0,1", "2,3"}
    assert config(data_files, tmp_path / "t", devices="0,1,2,3").device_slots == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="--jobs 3 and --devices 0,1 disagree"):
        config(data_files, tmp_path / "t", devices="0,1", jobs=3)
    with pytest.raises(ValueError, match="--devices: expected GPU numbers"):
        config(data_files, tmp_path / "t", devices="0,,1")
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        config(data_files, tmp_path / "t", jobs=0)


def test_interrupted_child_stops_the_sweep_and_a_rerun_resumes_it(data_files, tmp_path, capsys):
    out = tmp_path / "s"
    cfg = config(data_files, out, modes=["regular"], seeds=[1, 2, 3, 4], jobs=2)
    children = FakeChildren(interrupt="regular_seed2")
    assert run_sweep(cfg, children) == 143
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM during regular_seed2, which is unfinished (not in the ledger)" in err
    # Seeds 1 and 2 started together; 1 finished and is in the ledger; after the signal nothing new started.
    assert children.trained()[:2] == ["regular_seed1", "regular_seed2"]
    assert "regular_seed4" not in children.trained()
    done = {e["run"] for e in ledger(out)}
    assert "regular_seed1" in done and "regular_seed2" not in done

    rerun = FakeChildren()
    assert run_sweep(cfg, rerun) == 0
    assert sorted(rerun.trained()) == sorted({"regular_seed2", "regular_seed3", "regular_seed4"} - done)
    resumed = next(c["argv"] for c in rerun.calls if c["run"] == "regular_seed2" and c["command"] == "train")
    assert resumed[resumed.index("--resume_from_checkpoint") + 1] == "latest"
    assert sorted(e["run"] for e in ledger(out)) == [f"regular_seed{s}" for s in (1, 2, 3, 4)]


@pytest.mark.slow
def test_two_cpu_jobs_train_and_evaluate_tiny_models(data_files, tmp_path, tiny_model_dirs):
    """The real children: two `stepjepa train` + `evaluate` at once on the CPU, each in its own process."""
    out = tmp_path / "sweep"
    cfg = config(data_files, out, model_name=str(tiny_model_dirs["llama"]), modes=["regular", "step_jepa"],
                 seeds=[1], train_args=TINY_TRAIN, eval_args="--max_new_tokens 4", max_examples=2, jobs=2)
    assert run_sweep(cfg) == 0
    names = ["regular_seed1", "step_jepa_lbd0.1_k0_cosine_seed1"]
    assert sorted(e["run"] for e in ledger(out)) == names
    for name in names:
        assert [json.loads(line)["step"] for line in (out / name / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert "model saved to" in (out / "logs" / f"{name}.log").read_text()  # the child's output, in its log

"""The sweep: the grid and its flags, YAML presets, the resumable ledger end to end on a tiny model, child processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepjepa.cli import parse_config, run_command
from stepjepa.data import DEFAULT_SYSTEM_PROMPT
from stepjepa.data.synthetic import synthetic_splits
from stepjepa.experiments.config import SweepConfig
from stepjepa.experiments.sweep import run_sweep
from stepjepa.experiments.sweep_children import check_commands
from stepjepa.experiments.sweep_grid import Run, plan_runs
from stepjepa.training.runlock import LOCK_NAME

TINY_TRAIN = "--max_steps 2 --batch_size 2 --logging_steps 1 --debug 0"


@pytest.fixture
def data_files(tmp_path) -> tuple[Path, Path]:
    """Twenty synthetic training problems and their two-problem test split."""
    train, test = synthetic_splits(20, seed=0)
    paths = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for path, problems in zip(paths, (train, test)):
        path.write_text("".join(json.dumps(p.to_row(DEFAULT_SYSTEM_PROMPT)) + "\n" for p in problems))
    return paths


def config(data_files, output_dir: Path, **overrides) -> SweepConfig:
    """A sweep of the grid alone (no base row, no probe) unless the overrides ask for them."""
    train_file, test_file = data_files
    values = dict(train_file=str(train_file), test_file=str(test_file), output_dir=str(output_dir), model_name="m",
                  no_base=True, no_probe=True)
    return SweepConfig(**{**values, **overrides})


class InProcess:
    """Runs `python -m stepjepa COMMAND ...` in this process (the same code, without a new interpreter's imports)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> int:
        assert argv[:3] == [sys.executable, "-m", "stepjepa"]
        self.calls.append(argv[3:])
        # `train` installs its own Ctrl-C handler; give pytest its own back afterwards.
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return run_command(argv[3], argv[4:])
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    def trained(self) -> list[str]:
        """The run directory names trained, in order."""
        return [Path(call[call.index("--output_dir") + 1]).name for call in self.calls if call[0] == "train"]


def never(argv: list[str]) -> int:
    raise AssertionError(f"nothing should run, got {argv}")


def ledger(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "ledger.jsonl").read_text().splitlines()]


# --- the grid ---------------------------------------------------------------------------------------------------


def test_grid_regular_once_per_seed(data_files, tmp_path) -> None:
    cfg = config(data_files, tmp_path / "s", modes=["regular", "step_jepa"], seeds=[1, 2], lbd=[0.1, 2.0],
                 predictors=[0, 2], losses=["cosine", "l2"])
    names = [run.name for run in plan_runs(cfg)]
    # regular: 2 seeds; step_jepa: 2 losses x 2 lambdas x 2 K x 2 seeds = 16.
    assert len(names) == 2 + 16
    assert names[:4] == ["regular_seed1", "regular_seed2", "step_jepa_lbd0.1_k0_cosine_seed1",
                         "step_jepa_lbd0.1_k0_cosine_seed2"]
    assert "step_jepa_lbd2_k2_l2_seed2" in names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("run", "flags"),
    [
        (Run("regular", 1), ["--regular"]),
        (Run("llm_jepa", 1, 0.5, 2, "cosine"), ["--lbd", "0.5", "--predictors", "2"]),
        (Run("step_jepa", 1, 0.1, 0, "infonce"), ["--step_jepa", "--lbd", "0.1", "--predictors", "0", "--infonce"]),
        (Run("step_jepa", 1, 2.0, 1, "mse"), ["--step_jepa", "--lbd", "2", "--predictors", "1", "--jepa_mse"]),
    ],
)
def test_mode_flags(run: Run, flags: list[str]) -> None:
    assert run.mode_flags() == flags


def test_step_pairs_and_stop_grad_are_grid_axes(data_files, tmp_path) -> None:
    cfg = config(data_files, tmp_path / "s", modes=["regular", "llm_jepa", "step_jepa"], seeds=[1],
                 predictors=[2], step_pairs=["first", "all", "random"], target_stop_grad=["false", "true"])
    names = [run.name for run in plan_runs(cfg)]
    # regular: 1; LLM-JEPA has one pair per example: 2 stop-grad settings; Step-JEPA: 3 pair modes x 2 = 6.
    assert names == [
        "regular_seed1",
        "llm_jepa_lbd0.1_k2_cosine_seed1", "llm_jepa_lbd0.1_k2_cosine_stopgrad_seed1",
        "step_jepa_lbd0.1_k2_cosine_seed1", "step_jepa_lbd0.1_k2_cosine_stopgrad_seed1",
        "step_jepa_lbd0.1_k2_cosine_allpairs_seed1", "step_jepa_lbd0.1_k2_cosine_allpairs_stopgrad_seed1",
        "step_jepa_lbd0.1_k2_cosine_randompairs_seed1", "step_jepa_lbd0.1_k2_cosine_randompairs_stopgrad_seed1",
    ]
    runs = plan_runs(cfg)
    assert runs[8].mode_flags() == ["--step_jepa", "--lbd", "0.1", "--predictors", "2", "--step_pairs", "random",
                                    "--target_stop_grad"]
    assert runs[2].mode_flags() == ["--lbd", "0.1", "--predictors", "2", "--target_stop_grad"]
    # Every generated command line parses as `stepjepa train` flags.
    for run in runs:
        check_commands(cfg, run, tmp_path / "s" / run.name)
    assert config(data_files, tmp_path / "s", target_stop_grad=[True, "no"]).target_stop_grad == [True, False]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modes": ["regular", "jepa"]}, "unknown jepa"),
        ({"losses": ["cos"]}, "unknown cos"),
        ({"seeds": []}, "--seeds needs at least one value"),
        ({"lbd": [-0.1]}, "--lbd"),
        ({"predictors": [-1]}, "--predictors"),
        ({"max_examples": 0}, "--max_examples"),
        ({"test_file": None}, "--test_file is required"),
        ({"train_args": "--lora --seed 3"}, "may not set --seed"),
        ({"train_args": "--output_dir=x"}, "may not set --output_dir"),
        ({"eval_args": "--max_examples 3"}, "may not set --max_examples"),
        ({"train_args": "--lora 'unclosed"}, "--train_args"),
        ({"step_pairs": ["every"]}, "--step_pairs: unknown every"),
        ({"target_stop_grad": ["maybe"]}, "--target_stop_grad: expected true or false"),
        ({"train_args": "--step_pairs all"}, "may not set --step_pairs"),
    ],
)
def test_bad_flags_are_refused(data_files, tmp_path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(data_files, tmp_path / "s", **overrides)


def test_pass_through_flags_are_checked_before_any_run(data_files, tmp_path) -> None:
    cfg = config(data_files, tmp_path / "s", modes=["regular"], seeds=[1], train_args="--no_such_flag 2")
    with pytest.raises(ValueError, match="unrecognized arguments: --no_such_flag 2"):
        run_sweep(cfg, runner=never)
    cfg = config(data_files, tmp_path / "s", modes=["regular"], seeds=[1], train_args="--debug 7")
    with pytest.raises(ValueError, match="--debug 7"):
        run_sweep(cfg, runner=never)
    assert not (tmp_path / "s").exists()


def test_yaml_fills_defaults_and_flags_win(data_files, tmp_path) -> None:
    train_file, test_file = data_files
    preset = tmp_path / "sweep.yaml"
    preset.write_text(
        "# stepjepa sweep --config sweep.yaml\n"
        f"train_file: {train_file}\ntest_file: {test_file}\nmodes: [regular, step_jepa]\nseeds: [82, 23]\n"
        "lbd: 0.5\nlosses: [l2]\ntrain_args: --max_steps 5\n"
    )
    cfg = parse_config("sweep", ["--config", str(preset), "--seeds", "4", "--output_dir", str(tmp_path / "s")])
    assert cfg.seeds == [4]  # the flag wins
    assert (cfg.modes, cfg.lbd, cfg.losses, cfg.train_args) == (["regular", "step_jepa"], [0.5], ["l2"], "--max_steps 5")
    assert cfg.train_file == str(train_file)

    preset.write_text("seeds: [1]\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown keys learning_rate"):
        parse_config("sweep", ["--config", str(preset)])
    preset.write_text("train_args: [--lora]\n")
    with pytest.raises(ValueError, match="train_args must be a str"):
        parse_config("sweep", ["--config", str(preset)])
    preset.write_text("seeds: [one]\n")
    with pytest.raises(ValueError, match="--seeds: expected int"):
        parse_config("sweep", ["--config", str(preset), "--train_file", "a", "--test_file", "b"])


def test_cli_lists_flags(data_files, tmp_path) -> None:
    train_file, test_file = data_files
    cfg = parse_config("sweep", [
        "--modes", "regular", "step_jepa", "--seeds", "82", "23", "--lbd", "0.1", "0.5", "--predictors", "0", "2",
        "--losses", "cosine", "--train_file", str(train_file), "--test_file", str(test_file),
        "--train_args", "--max_steps 20 --lora", "--launcher", "torchrun --nproc_per_node 2",
    ])
    assert (cfg.seeds, cfg.lbd, cfg.predictors) == ([82, 23], [0.1, 0.5], [0, 2])
    assert cfg.train_args == "--max_steps 20 --lora"
    assert len(plan_runs(cfg)) == 2 + 2 * 2 * 2


def test_dry_run_lists_runs_and_runs_nothing(data_files, tmp_path, capsys) -> None:
    out = tmp_path / "s"
    cfg = config(data_files, out, modes=["regular", "step_jepa"], seeds=[1, 2], dry_run=True, train_args="--lora")
    (out / "regular_seed2").mkdir(parents=True)  # left by an interrupted run
    checkpoint = out / "step_jepa_lbd0.1_k0_cosine_seed1" / "checkpoint-3"  # an interrupted run's whole checkpoint
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3, "max_steps": 10}))
    (checkpoint / "stepjepa_run.json").write_text(json.dumps({"seed": 1, "run_id": "r"}))
    assert run_sweep(cfg, runner=never) == 0
    printed = capsys.readouterr().out
    assert "to run                regular_seed1" in printed
    assert "redo (half-finished)  regular_seed2" in printed
    assert "resume (checkpoint)   step_jepa_lbd0.1_k0_cosine_seed1" in printed
    assert "4 runs in" in printed and "0 done, 4 to run (2 redone)" in printed
    assert "--output_dir " + str(out / "regular_seed1") + " --seed 1 --regular --lora" in printed
    assert not (out / "ledger.jsonl").exists()


# --- end to end on a tiny model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_resumes_and_redoes_only_unfinished_runs(data_files, tmp_path, tiny_model_dirs) -> None:
    out = tmp_path / "sweep"
    cfg = config(data_files, out, model_name=str(tiny_model_dirs["llama"]), modes=["regular", "step_jepa"],
                 seeds=[1, 2], train_args=TINY_TRAIN, eval_args="--max_new_tokens 8", max_examples=2)
    names = ["regular_seed1", "regular_seed2", "step_jepa_lbd0.1_k0_cosine_seed1", "step_jepa_lbd0.1_k0_cosine_seed2"]

    runner = InProcess()
    assert run_sweep(cfg, runner) == 0
    assert runner.trained() == names
    assert [c[0] for c in runner.calls] == ["train", "evaluate"] * 4
    entries = ledger(out)
    assert [e["run"] for e in entries] == names
    for e in entries:
        assert e["global_step"] == 2 and e["total_examples"] == 2
        assert 0.0 <= e["accuracy"] <= 1.0
        metrics = [json.loads(line) for line in (out / e["run"] / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [1, 2]
        # Regular runs have no JEPA term; Step-JEPA runs log one.
        assert all((m["jepa_loss"] is None) == (e["mode"] == "regular") for m in metrics)
        assert json.loads((out / e["run"] / "train_summary.json").read_text())["mode"] == e["mode"]
    assert entries[0]["fixed"]["train_args"] == TINY_TRAIN.split()
    assert (entries[2]["lbd"], entries[2]["predictors"], entries[2]["loss"]) == (0.1, 0, "cosine")
    assert (entries[0]["lbd"], entries[0]["loss"]) == (None, None)
    assert (entries[2]["step_pairs"], entries[2]["target_stop_grad"]) == ("first", False)

    # Started again: everything is finished, nothing runs.
    assert run_sweep(cfg, never) == 0
    assert len(ledger(out)) == 4

    # One ledger line lost (the sweep died between evaluation and the ledger): only that run is redone; its
    # training had finished, so it resumes (nothing retrained) and so does the evaluation of that same model.
    (out / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries if e["run"] != names[3]))
    runner = InProcess()
    assert run_sweep(cfg, runner) == 0
    assert runner.trained() == [names[3]]
    assert "--resume_from_checkpoint" in runner.calls[0] and "--overwrite_output_dir" not in runner.calls[0]
    metrics = (out / names[3] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2]
    assert json.loads((out / names[3] / "eval_summary.json").read_text())["generated_this_run"] == 0
    assert len((out / names[3] / "eval.jsonl").read_text().splitlines()) == 2
    assert sorted(e["run"] for e in ledger(out)) == sorted(names)

    # A run stopped before any checkpoint (nothing to resume): retrained from the start with
    # --overwrite_output_dir, not appended to, and evaluated afresh, not from the stale model's answers.
    for path in (out / names[0]).glob("checkpoint-*"):
        shutil.rmtree(path)
    (out / names[0] / "eval_summary.json").unlink()
    runner = InProcess()
    assert run_sweep(cfg, runner) == 0
    assert runner.trained() == [names[0]]
    assert "--overwrite_output_dir" in runner.calls[0]
    metrics = (out / names[0] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2]
    assert json.loads((out / names[0] / "eval_summary.json").read_text())["generated_this_run"] == 2
    assert [e["run"] for e in ledger(out)].count(names[0]) == 2


def test_ledger_of_another_setting_is_refused(data_files, tmp_path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    fixed = config(data_files, out).fixed_settings()
    (out / "ledger.jsonl").write_text(json.dumps({"run": "regular_seed1", "fixed": {**fixed, "train_args": ["--lora"]}}) + "\n")
    cfg = config(data_files, out, modes=["regular"], seeds=[1])
    with pytest.raises(ValueError, match=r"run regular_seed1 was made with train_args=\['--lora'\]"):
        run_sweep(cfg, never)


# --- child processes --------------------------------------------------------------------------------------------


def fake_launcher(tmp_path: Path, exit_status: int) -> str:
    """A launcher that records the command it was given and exits with ``exit_status`` (no training)."""
    script = tmp_path / "launcher.py"
    record = tmp_path / "launched.jsonl"
    script.write_text(
        "import json, sys\n"
        f"with open({str(record)!r}, 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.exit({exit_status})\n"
    )
    return f"{sys.executable} {script}"


def launched(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "launched.jsonl").read_text().splitlines()]


def test_launcher_prefixes_training_and_failures_go_on(data_files, tmp_path, capsys) -> None:
    out = tmp_path / "s"
    cfg = config(data_files, out, modes=["regular"], seeds=[1, 2], launcher=fake_launcher(tmp_path, 3))
    assert run_sweep(cfg) == 1
    calls = launched(tmp_path)
    # Both runs were tried, each with the launcher in front of `-m stepjepa train`.
    assert [call[:3] for call in calls] == [["-m", "stepjepa", "train"]] * 2
    assert calls[1][calls[1].index("--output_dir") + 1] == str(out / "regular_seed2")
    assert not (out / "ledger.jsonl").exists()
    assert "failed runs (run the same command again to retry them): regular_seed1, regular_seed2" in capsys.readouterr().err


def test_interrupted_child_stops_the_sweep(data_files, tmp_path, capsys) -> None:
    cfg = config(data_files, tmp_path / "s", modes=["regular"], seeds=[1, 2], launcher=fake_launcher(tmp_path, 130))
    assert run_sweep(cfg) == 130
    assert len(launched(tmp_path)) == 1
    assert "interrupted by SIGINT during regular_seed1, which is unfinished" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_reaches_the_training_child_and_a_rerun_resumes(data_files, tmp_path, tiny_model_dirs) -> None:
    out = tmp_path / "s"
    run_dir = out / "regular_seed1"
    train_file, test_file = data_files
    sweep = [sys.executable, "-m", "stepjepa", "sweep", "--modes", "regular", "--seeds", "1",
             "--train_file", str(train_file), "--test_file", str(test_file), "--output_dir", str(out),
             "--model_name", str(tiny_model_dirs["llama"]), "--max_examples", "1", "--eval_args", "--max_new_tokens 4",
             "--no_base", "--no_probe"]
    flags = "--batch_size 2 --logging_steps 1 --save_steps 1000 --num_epochs 100 --debug 1"
    proc = subprocess.Popen([*sweep, "--train_args", f"--max_steps 400 {flags}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    child = int((run_dir / LOCK_NAME).read_text())  # the training child holds the run directory's lock
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-2000:]
    assert "checkpoint saved at step" in err  # the child's own line: it got the signal and checkpointed
    assert "interrupted by SIGTERM during regular_seed1, which is unfinished (not in the ledger)" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # no orphan left training
    stopped = int(next(run_dir.glob("checkpoint-*")).name.split("-")[1])
    assert 3 <= stopped < 400
    assert not (out / "ledger.jsonl").exists()

    # The rerun resumes from the checkpoint (here told to stop two steps later) instead of starting over.
    done = subprocess.run([*sweep, "--train_args", f"--max_steps {stopped + 2} {flags}"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, stopped + 3))
    assert [e["global_step"] for e in ledger(out)] == [stopped + 2]


# --- the base row and the probe -----------------------------------------------------------------------------------


@pytest.mark.slow  # two trainings, three evaluations and three probes
def test_sweep_evaluates_and_probes_the_base_and_each_run(data_files, tmp_path, tiny_model_dirs) -> None:
    """The base model is evaluated and probed once (no training); every run is trained, evaluated and probed;
    the ledger keeps the probe's numbers and the report shows the base row and the probe table."""
    from stepjepa.experiments.config import ReportConfig
    from stepjepa.experiments.report import run_report

    out = tmp_path / "sweep"
    cfg = config(data_files, out, model_name=str(tiny_model_dirs["llama"]), modes=["regular", "step_jepa"],
                 seeds=[1], predictors=[1], train_args=TINY_TRAIN, eval_args="--max_new_tokens 4 --no_bf16",
                 max_examples=2, probe_file=str(data_files[0]), probe_args="--max_examples 6 --no_bf16",
                 no_base=False, no_probe=False)
    runner = InProcess()
    assert run_sweep(cfg, runner) == 0
    assert [c[0] for c in runner.calls] == ["evaluate", "probe"] + ["train", "evaluate", "probe"] * 2
    assert runner.calls[0][runner.calls[0].index("--model_path") + 1] == str(tiny_model_dirs["llama"])
    assert all(c[c.index("--mode") + 1] == "step_jepa" for c in runner.calls if c[0] == "probe")
    entries = {e["run"]: e for e in ledger(out)}
    assert list(entries) == ["base", "regular_seed1", "step_jepa_lbd0.1_k1_cosine_seed1"]
    assert entries["base"]["mode"] == "base" and entries["base"]["global_step"] is None
    assert set(entries["base"]["probe"]) == {"k0"} and set(entries["regular_seed1"]["probe"]) == {"k0"}
    assert set(entries["step_jepa_lbd0.1_k1_cosine_seed1"]["probe"]) == {"k0", "k1"}
    assert entries["base"]["probe"]["k0"]["pairs"] == 6
    assert run_sweep(cfg, never) == 0  # all done, the base included

    run_report(ReportConfig(runs_dir=str(out)))
    text = (out / "report.md").read_text()
    table = text[text.index("| configuration | seeds"):].splitlines()
    assert table[2].startswith("| base | — |") and table[3].startswith("| regular | 1 |")  # the base has no seed
    assert "## Held-out JEPA probe" in text
    assert "| step_jepa_lbd0.1_k1_cosine | K1 | 1 |" in text and "| base | K0 | 1 |" in text


def test_probe_needs_a_chat_file(data_files, tmp_path) -> None:
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    cfg = config((data_files[0], gsm8k), tmp_path / "s", no_probe=False)
    with pytest.raises(ValueError, match="the probe needs a chat file"):
        run_sweep(cfg, never)
    assert not (tmp_path / "s").exists()

"""The options guide's shell scripts, run for real on a tiny model for one step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ONE_STEP = ["--max_steps", "1", "--batch_size", "2", "--logging_steps", "1", "--max_length", "256"]


def run_script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=full_env, capture_output=True, text=True,
                          timeout=300)


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "train_summary.json").read_text())


FULL_SCRIPT_CASES = [
    ({"MODE": "regular", "LORA": "0"}, "regular", "cosine", False),
    ({"MODE": "jepa", "PREDICTORS": "2", "LBD": "0.5", "LOSS": "l2"}, "llm_jepa", "l2", True),
    ({"MODE": "step_jepa", "PREDICTORS": "1", "LOSS": "mse", "SEED": "7"}, "step_jepa", "mse", True),
]


def recording_python(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for PYTHON that records the arguments it was given (one JSON line per call) and trains nothing."""
    record = tmp_path / "argv.jsonl"
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"with open({str(record)!r}, 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    return fake, record


@pytest.mark.parametrize(("env", "mode", "loss", "lora"), FULL_SCRIPT_CASES)
def test_full_script_settings_become_the_training_flags(tmp_path, env, mode, loss, lora) -> None:
    """The script's variables, as the command it runs parses them (no training: PYTHON records its arguments)."""
    from stepjepa.cli import parse_config

    fake, record = recording_python(tmp_path)
    out = tmp_path / "out"
    result = run_script("train_adapted_full.sh", {"OUTPUT_DIR": str(out), **env, "PYTHON": str(fake)}, *ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    [argv] = [json.loads(line) for line in record.read_text().splitlines()]
    assert argv[0] == str(SCRIPTS.parent / "finetune_step_jepa_adapted.py")
    cfg = parse_config("train", argv[1:])
    assert (cfg.mode, cfg.loss_kind, cfg.lora, cfg.seed) == (mode, loss, lora, int(env.get("SEED", "42")))
    assert (cfg.output_dir, cfg.max_steps, cfg.max_length) == (str(out), 1, 256)  # extra arguments come last
    if mode == "regular":
        assert cfg.predictors == 0
    else:
        assert (cfg.predictors, cfg.lbd) == (int(env["PREDICTORS"]), float(env.get("LBD", "0.1")))


@pytest.mark.slow
def test_full_script_trains(tmp_path, chat_file, tiny_model_dirs) -> None:
    """One real run of the script: LLM-JEPA, two predictors, L2, LoRA."""
    env, mode, loss, _ = FULL_SCRIPT_CASES[1]
    out = tmp_path / "out"
    paths = {"TRAIN_FILE": str(chat_file), "MODEL_NAME": str(tiny_model_dirs["llama"]), "OUTPUT_DIR": str(out)}
    result = run_script("train_adapted_full.sh", {**paths, **env, "DEBUG": "1"}, *ONE_STEP)
    assert result.returncode == 0, result.stderr[-3000:]
    done = summary(out)
    assert (done["mode"], done["loss"], done["global_step"]) == (mode, loss, 1)
    assert (done["config"]["lora"], done["predictors"], done["config"]["lbd"]) == (True, 2, 0.5)
    assert (out / "adapter").is_dir()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["jepa_loss"] is not None
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize(("variable", "value"), [("MODE", "jepa2"), ("LOSS", "cos"), ("LORA", "yes")])
def test_full_script_refuses_bad_settings(tmp_path, variable, value) -> None:
    result = run_script("train_adapted_full.sh", {variable: value, "PYTHON": "false"})
    assert result.returncode == 2
    assert f"{variable} must be" in result.stderr and value in result.stderr


@pytest.mark.slow
def test_simple_script_trains_step_jepa_with_lora(tmp_path, chat_file, tiny_model_dirs) -> None:
    out = tmp_path / "simple"
    env = {"TRAIN_FILE": str(chat_file), "MODEL_NAME": str(tiny_model_dirs["gpt2"]), "OUTPUT_DIR": str(out)}
    result = run_script("train_adapted.sh", env, *ONE_STEP, "--debug", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    done = summary(out)
    assert (done["mode"], done["loss"], done["config"]["lora"], done["config"]["lbd"]) == ("step_jepa", "cosine", True, 0.1)


@pytest.mark.slow
def test_sweep_script_skips_finished_runs(tmp_path, chat_file, tiny_model_dirs) -> None:
    prefix = tmp_path / "ckpt"
    finished = tmp_path / "ckpt_seed1_lbd0.5"
    finished.mkdir()
    (finished / "train_summary.json").write_text("{}")
    half_finished = tmp_path / "ckpt_seed2_lbd0.5"
    half_finished.mkdir()
    (half_finished / "stale.txt").write_text("left by an interrupted run")
    env = {"TRAIN_FILE": str(chat_file), "MODEL_NAME": str(tiny_model_dirs["llama"]), "OUTPUT_PREFIX": str(prefix),
           "SEEDS": "1 2", "LBDS": "0.5"}
    result = run_script("sweep.sh", env, *ONE_STEP, "--debug", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skip {finished}: finished" in result.stdout
    assert list(finished.iterdir()) == [finished / "train_summary.json"]
    # The interrupted run was trained again in its directory (--overwrite_output_dir), with the loop's settings.
    done = summary(half_finished)
    assert (done["mode"], done["config"]["seed"], done["config"]["lbd"], done["config"]["lora"]) == ("step_jepa", 2, 0.5, True)


# --- scripts/paper_gsm8k.sh ---------------------------------------------------------------------------------------


def gsm8k_dir(tmp_path: Path, train_rows: list[dict], test_rows: list[dict]) -> Path:
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    for name, rows in (("train", train_rows), ("test", test_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.mark.parametrize(("lbds", "expected"), [
    # Defaults (5 seeds, 4 epochs, one lambda): training 4 * 5 * (5 + 10 + 6) = 420 min = 7.0 h; evaluations
    # 1 + 5 * 3 = 16 of 5.6 min = 89.6 min = 1.49 h; 8.49 in all.
    (None, ("15 training runs (5 seeds; lambda 1 x LLM-JEPA, 1 x Step-JEPA; regular) and 16 evaluations",
            "about 8.5 H100 GPU-hours (training 7.0, evaluation 1.5")),
    # The guide's three lambdas: 4 * 5 * (5 + 30 + 18) = 1060 min = 17.67 h; 1 + 5 * 7 = 36 evaluations * 5.6 min
    # = 201.6 min = 3.36 h; 21.03 in all.
    ("0.1 0.5 2.0", ("35 training runs (5 seeds; lambda 3 x LLM-JEPA, 3 x Step-JEPA; regular) and 36 evaluations",
                     "about 21.0 H100 GPU-hours (training 17.7, evaluation 3.4")),
])
def test_paper_gsm8k_prints_its_gpu_hours(tmp_path, lbds, expected) -> None:
    """GSM8K's size (7,473 training, 1,319 test problems): the estimate of the script's header, by hand."""
    row = {"question": "q", "answer": "a\n#### 1"}
    folder = gsm8k_dir(tmp_path, [row] * 7473, [row] * 1319)
    env = {"GSM8K_DIR": str(folder), "ESTIMATE_ONLY": "1", "OUT": str(tmp_path / "out"), **({"LBDS": lbds} if lbds else {})}
    result = run_script("paper_gsm8k.sh", env)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
    assert not (tmp_path / "out").exists()  # nothing ran


def test_paper_gsm8k_names_a_missing_file(tmp_path) -> None:
    result = run_script("paper_gsm8k.sh", {"GSM8K_DIR": str(tmp_path)})
    assert result.returncode == 2 and f"{tmp_path}/train.jsonl: no such file" in result.stderr


@pytest.mark.slow
def test_paper_gsm8k_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_model_dirs) -> None:
    """One seed, Step-JEPA at lambda 0.5 and 2, LLM-JEPA at 0.5, float32, 8 new tokens: every run trains, evaluates
    and is probed; the ledger records termination and provenance; training logged the collapse diagnostics; the
    report has the dose-response plot and Holm's correction over the three JEPA configurations."""
    from evaluation.test_evaluate import GSM8K_ROWS

    folder = gsm8k_dir(tmp_path, GSM8K_ROWS * 2, GSM8K_ROWS)
    out = tmp_path / "out"
    env = {"GSM8K_DIR": str(folder), "MODEL": str(tiny_model_dirs["llama"]), "SEEDS": "3", "EPOCHS": "1",
           "BATCH": "4", "LBDS": "0.5 2", "LBDS_LLM": "0.5", "MAX_NEW_TOKENS": "8", "PRECISION": "--no_bf16", "OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(SCRIPTS / "paper_gsm8k.sh")], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("paper_gsm8k.sh: 4 training runs (1 seeds; lambda 1 x LLM-JEPA, 2 x Step-JEPA")
    ledger = {e["run"]: e for e in map(json.loads, (out / "sweep" / "ledger.jsonl").read_text().splitlines())}
    assert set(ledger) == {"base", "regular_seed3", "llm_jepa_lbd0.5_k2_cosine_seed3",
                           "step_jepa_lbd0.5_k2_cosine_seed3", "step_jepa_lbd2_k2_cosine_seed3"}
    for entry in ledger.values():
        assert entry["termination_rows"] == 4 and entry["total_examples"] == 4
        assert entry["ended_at_end_of_turn"] + entry["hit_max_new_tokens"] == 4
        assert entry["provenance"]["precision"]["evaluate"] == "float32"
    step = out / "sweep" / "step_jepa_lbd2_k2_cosine_seed3"
    train = json.loads((step / "train_summary.json").read_text())
    assert train["provenance"]["precision"] == "fp32" and train["provenance"]["stepjepa_version"]
    assert json.loads((step / "probe.json").read_text())["provenance"]["precision"] == "float32"
    metrics = [json.loads(line) for line in (step / "metrics.jsonl").read_text().splitlines()]
    assert all(-1 <= row["view_b_mean_cosine"] <= 1 and row["view_a_dim_std"] >= 0 for row in metrics)
    report = (out / "sweep" / "report.md").read_text()
    assert "p Holm (m = 0)" in report  # one seed: no paired t-test to correct and "![dose-response over lambda](report_dose.png)" in report
    assert (out / "sweep" / "report_collapse.png").is_file()
    assert "termination regular_seed3: " in result.stdout

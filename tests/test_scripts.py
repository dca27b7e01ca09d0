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

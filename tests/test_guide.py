"""Every `python finetune_step_jepa_adapted.py` command of the user's options guide parses as written into the
settings its flags name; the richest one also trains (the script runs `run_command("train", argv)`)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from stepjepa.cli import parse_config, run_command

GUIDE = Path(__file__).resolve().parents[2] / "shared" / "seed" / "FULL_OPTIONS_GUIDE.md"
# Example 4's loop variables take one value of their loop.
LOOP_VALUES = {"seed": "82", "lbd": "0.5"}


def guide_commands() -> list[list[str]]:
    text = GUIDE.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#")[0] if line.lstrip().startswith("python") else line
            if line.strip().startswith("python finetune_step_jepa_adapted.py"):
                for name, value in LOOP_VALUES.items():
                    line = line.replace("${" + name + "}", value).replace("$" + name, value)
                commands.append(shlex.split(line)[2:])
    return commands


def flag(argv: list[str], name: str, default: str | None = None) -> str | None:
    """The value after ``--name`` in ``argv`` (read here by hand, independently of the parser)."""
    return argv[argv.index(name) + 1] if name in argv else default


def expected_settings(argv: list[str]) -> dict:
    """What the guide's flags say, with the guide's documented defaults for the ones a command leaves out."""
    loss = "l2" if "--jepa_l2" in argv else "mse" if "--jepa_mse" in argv else "infonce" if "--infonce" in argv else "cosine"
    return {
        "mode": "regular" if "--regular" in argv else "step_jepa" if "--step_jepa" in argv else "llm_jepa",
        "loss": loss,
        "seed": int(flag(argv, "--finetune_seed", "42")),
        "lbd": float(flag(argv, "--lbd", "0.1")),
        "gamma": float(flag(argv, "--gamma", "1.0")),
        "predictors": int(flag(argv, "--predictors", "0")),
        "lora": "--lora" in argv,
        "lora_rank": int(flag(argv, "--lora_rank", "16")),
        "last_token": flag(argv, "--last_token", "auto"),
        "train_file": flag(argv, "--train_file"),
        "output_dir": flag(argv, "--output_dir", "./checkpoints"),
        "model_name": flag(argv, "--model_name", "smollm2-135m-instruct"),
    }


def parsed_settings(config) -> dict:
    return {
        "mode": config.mode, "loss": config.loss_kind, "seed": config.seed, "lbd": config.lbd, "gamma": config.gamma,
        "predictors": config.predictors, "lora": config.lora, "lora_rank": config.lora_rank,
        "last_token": config.last_token, "train_file": config.train_file, "output_dir": config.output_dir,
        "model_name": config.model_name,
    }


pytestmark = pytest.mark.skipif(not GUIDE.is_file(), reason=f"{GUIDE} absent")


def test_the_guide_has_its_ten_commands():
    assert len(guide_commands()) == 10


@pytest.mark.parametrize("index", range(10))
def test_guide_command_parses_to_what_its_flags_say(index):
    argv = guide_commands()[index]
    assert parsed_settings(parse_config("train", argv)) == expected_settings(argv)


def test_the_guide_covers_every_mode_and_loss():
    """The ten parse-only cases above reach each mode and each JEPA loss."""
    settings = [expected_settings(argv) for argv in guide_commands()]
    assert {s["mode"] for s in settings} == {"regular", "llm_jepa", "step_jepa"}
    assert {s["loss"] for s in settings} == {"cosine", "l2", "mse", "infonce"}


def test_the_richest_guide_command_trains_on_a_tiny_model(tiny_model_dirs, chat_file, tmp_path):
    """The command with the most flags, as written, then pointed at local files (later flags override earlier)."""
    argv = max(guide_commands(), key=len)
    assert "--last_token" in argv and "--step_jepa" in argv  # the guide's Step-JEPA example with every flag
    out = tmp_path / "out"
    overrides = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["llama"]),
                 "--output_dir", str(out), "--max_steps", "1", "--batch_size", "2", "--logging_steps", "1",
                 "--debug", "0"]
    assert run_command("train", argv + overrides, prog="finetune_step_jepa_adapted.py") == 0
    summary = json.loads((out / "train_summary.json").read_text())
    want = expected_settings(argv)
    assert (summary["mode"], summary["loss"], summary["global_step"]) == (want["mode"], want["loss"], 1)
    assert {key: summary["config"][key] for key in ("seed", "lbd", "gamma", "lora", "lora_rank", "last_token")} == {
        key: want[key] for key in ("seed", "lbd", "gamma", "lora", "lora_rank", "last_token")}
    assert (out / "adapter" / "adapter_config.json").is_file()

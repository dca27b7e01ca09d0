"""Every `python finetune_step_jepa_adapted.py` command of the user's options guide runs as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from stepjepa.cli import run_command

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


pytestmark = pytest.mark.skipif(not GUIDE.is_file(), reason=f"{GUIDE} absent")


def test_the_guide_has_its_ten_commands():
    assert len(guide_commands()) == 10


@pytest.mark.parametrize("index", range(10))
def test_guide_command_trains_on_a_tiny_model(index, tiny_model_dirs, chat_file, tmp_path):
    argv = guide_commands()[index]
    out = tmp_path / "out"
    # As written, then pointed at local files: later flags override earlier ones.
    overrides = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["llama"]),
                 "--output_dir", str(out), "--max_steps", "1", "--batch_size", "2", "--logging_steps", "1",
                 "--debug", "0"]
    assert run_command("train", argv + overrides) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    expected_mode = "regular" if "--regular" in argv else "step_jepa" if "--step_jepa" in argv else "llm_jepa"
    assert summary["mode"] == expected_mode
    seed = int(argv[argv.index("--finetune_seed") + 1]) if "--finetune_seed" in argv else 42
    assert summary["config"]["seed"] == seed

"""The console of a run: the Trainer's step bar shows for a run watched live (--debug 5, the default) and not for
a sweep's children (--debug 1), so a sweep's console is one line per stage, not one bar per child."""

from __future__ import annotations

import pytest

from stepjepa.commands import parse_config
from stepjepa.training.training_args import training_arguments


@pytest.mark.parametrize(("debug", "bar"), [("0", False), ("1", False), ("5", True)])
def test_the_step_bar_follows_debug(tmp_path, debug, bar):
    cfg = parse_config("train", ["--train_file", "x.jsonl", "--output_dir", str(tmp_path), "--debug", debug])
    assert training_arguments(cfg, has_eval=False).disable_tqdm is (not bar)

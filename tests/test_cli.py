"""Bad flags and unsafe output directories: one line, exit status 2, nothing touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stepjepa.cli import COMMANDS, main, run_command

BAD_FLAGS = [
    (["--regular", "--step_jepa"], "--regular and --step_jepa contradict"),
    (["--jepa_l2", "--infonce"], "choose one JEPA loss"),
    (["--predictors", "-1"], "--predictors must be >= 0"),
    (["--jepa_ratio", "1.5"], "--jepa_ratio is a probability"),
    (["--regular", "--predictors", "2"], "--regular trains without JEPA"),
    (["--last_token", "3"], "--last_token counts from the end"),
    (["--last_token", "x"], "--last_token must be 'auto' or a negative integer"),
    (["--lora_rank", "0"], "--lora_rank must be >= 1"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--step_jepa", "--step_pairs", "every"], "--step_pairs must be one of first, all, random"),
    (["--step_pairs", "all"], "--step_pairs all needs --step_jepa"),
    (["--regular", "--target_stop_grad"], "--regular trains without JEPA; drop --target_stop_grad"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_bad_flags_give_one_line_and_status_2(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    status = run_command("train", ["--train_file", "x.jsonl", "--output_dir", str(out), *flags])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_non_empty_output_dir_is_refused_and_left_alone(tmp_path, chat_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("finished run")
    status = run_command("train", ["--train_file", str(chat_file), "--output_dir", str(out), "--regular"])
    assert status == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "finished run"


def test_missing_train_file_is_one_line(tmp_path, capsys):
    status = run_command("train", ["--train_file", str(tmp_path / "nope.jsonl"), "--output_dir", str(tmp_path / "o")])
    assert status == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_module_and_console_script_agree():
    done = subprocess.run([sys.executable, "-m", "stepjepa", "train", "--regular", "--step_jepa", "--train_file", "x"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "contradict" in done.stderr


def test_every_command_has_a_config_and_runner():
    import dataclasses

    from stepjepa.commands import load

    for command, (config, run, _) in COMMANDS.items():
        assert dataclasses.is_dataclass(load(config)) and callable(load(run)), command


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_a_value_error_from_inside_a_library_keeps_its_traceback(monkeypatch, tmp_path, capsys):
    """Only errors stepjepa raises are bad input; json's own ValueError here stands for a bug."""
    import json

    import stepjepa.data.prepare

    monkeypatch.setattr(stepjepa.data.prepare, "run_prepare", lambda cfg: json.loads("{"))
    with pytest.raises(json.JSONDecodeError):
        run_command("prepare", ["--synthetic", "2", "--output", str(tmp_path / "o.jsonl")])
    monkeypatch.undo()
    assert run_command("validate", [str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err == f"stepjepa validate: error: {tmp_path / 'missing.jsonl'}: no such file\n"

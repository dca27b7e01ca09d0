"""Flags declared and checked once: the shared groups' checks, bounds beside the field, --config FILE.yaml under
the command line, a run's train_config.json fed back, and docs/FLAGS.md generated from the configs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

import stepjepa.flag_groups
from stepjepa.cli import main, run_command
from stepjepa.commands import COMMANDS, flags_markdown, load, parse_config
from stepjepa.core.errors import UsageError
from stepjepa.experiments.ledger import probe_scalars
from stepjepa.flag_groups import Flags, markdown_table

ROOT = Path(__file__).resolve().parents[1]

# The least each command needs besides the flags under test.
REQUIRED = {"train": ["--train_file", "x.jsonl"], "evaluate": ["--model_path", "m", "--test_file", "t.jsonl"],
            "probe": ["--model_path", "m", "--test_file", "t.jsonl"], "bench": []}


def one_line_error(capsys, command: str, argv: list[str]) -> str:
    """The message of a refused command line: status 2 and exactly one line on stderr."""
    status = run_command(command, argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    prefix = f"stepjepa {command}: error: "
    assert err.startswith(prefix), err
    return err[len(prefix):].rstrip("\n")


# --- groups: one check, every command that uses it ---------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "evaluate", "probe", "bench"])
def test_bf16_and_no_bf16_refused_by_every_command_by_one_check(command, capsys, monkeypatch):
    calls = []
    check = stepjepa.flag_groups.check_precision_flags
    monkeypatch.setattr(stepjepa.flag_groups, "check_precision_flags", lambda *a: (calls.append(a), check(*a)))
    message = one_line_error(capsys, command, [*REQUIRED[command], "--bf16", "--no_bf16"])
    assert message == "--bf16 and --no_bf16 contradict each other; give one (or neither: auto)"
    assert calls == [(True, True)]  # once, though the command's config has several bases
    calls.clear()
    assert parse_config(command, [*REQUIRED[command], "--no_bf16"]).no_bf16
    assert calls == [(False, True)]


@pytest.mark.parametrize("command", ["evaluate", "probe", "bench"])
def test_the_device_pattern_is_one_check(command, capsys, monkeypatch):
    message = one_line_error(capsys, command, [*REQUIRED[command], "--device", "tpu"])
    assert message == "--device must be auto, cpu, mps, cuda or cuda:N, got 'tpu'"
    seen = []
    monkeypatch.setattr(stepjepa.flag_groups, "check_device", seen.append)
    assert parse_config(command, [*REQUIRED[command], "--device", "cpu"]).device == "cpu"
    assert seen == ["cpu"]


@pytest.mark.parametrize("command", ["train", "evaluate", "bench"])
def test_the_seed_range_is_one_bound(command, capsys):
    assert one_line_error(capsys, command, [*REQUIRED[command], "--seed", "-1"]) == "--seed must be in [0, 2**32), got -1"
    assert parse_config(command, [*REQUIRED[command], "--seed", str(2**32 - 1)]).seed == 2**32 - 1


def test_commands_keep_their_own_defaults_of_a_shared_flag():
    train, bench = parse_config("train", REQUIRED["train"]), parse_config("bench", [])
    assert (train.seed, train.predictors, train.learning_rate, train.lora_rank) == (42, 0, None, 16)
    assert (bench.seed, bench.predictors, bench.learning_rate, bench.lora_rank) == (0, 2, 1e-5, 16)
    assert parse_config("train", ["--finetune_seed", "7", *REQUIRED["train"]]).seed == 7  # the guide's name
    # An overridden default keeps the group's bound.
    with pytest.raises(UsageError, match=r"^--predictors must be >= 0, got -1$"):
        parse_config("bench", ["--predictors", "-1"])


# --- bounds beside the field -------------------------------------------------------------------------------------

@dataclass
class Sample(Flags):
    """A config with one bound of each kind."""

    count: int = field(default=1, metadata={"help": "How many.", "min": 1})
    ratio: float = field(default=0.5, metadata={"help": "A share.", "min": 0, "below": 1})
    rate: Optional[float] = field(default=None, metadata={"help": "A rate.", "above": 0, "reason": "a rate"})
    top: int = field(default=3, metadata={"help": "At most five.", "max": 5})
    name: str = field(default="", metadata={"help": "A | name <x>."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Tags."})


@pytest.mark.parametrize(("values", "message"), [
    ({"count": 0}, "--count must be >= 1, got 0"),
    ({"ratio": 1.0}, "--ratio must be in [0, 1), got 1.0"),
    ({"ratio": -0.25}, "--ratio must be in [0, 1), got -0.25"),
    ({"rate": 0.0}, "--rate must be > 0 (a rate), got 0.0"),
    ({"top": 6}, "--top must be <= 5, got 6"),
    ({"ratio": float("nan")}, "--ratio must be a finite number, got nan"),  # NaN fails no comparison: refused first
])
def test_a_value_out_of_its_fields_bounds_is_one_line(values, message):
    with pytest.raises(UsageError) as caught:
        Sample(**values)
    assert str(caught.value) == message


def test_values_on_the_bounds_and_unset_optionals_pass():
    assert Sample(count=1, ratio=0.0, rate=None, top=5).top == 5
    assert Sample(rate=1e-9, ratio=0.999).rate == 1e-9


@pytest.mark.parametrize(("command", "argv", "message"), [
    ("evaluate", ["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("probe", ["--max_examples", "1"], "--max_examples must be >= 2 (retrieval needs candidates), got 1"),
    ("bench", ["--lora_rank", "0"], "--lora_rank must be >= 1, got 0"),
    ("bench", ["--steps", "9"], "--steps must be >= 10 (medians over fewer are noise), got 9"),
    ("train", ["--warmup_ratio", "1"], "--warmup_ratio must be in [0, 1), got 1.0"),
])
def test_bounds_through_the_command_line(capsys, command, argv, message):
    assert one_line_error(capsys, command, [*REQUIRED[command], *argv]) == message


def test_markdown_table_of_a_config():
    assert markdown_table(Sample) == (
        "| flag | type | default | help |\n"
        "|---|---|---|---|\n"
        "| `--count` | int, >= 1 | `1` | How many. |\n"
        "| `--ratio` | float, in [0, 1) | `0.5` | A share. |\n"
        "| `--rate` | float, > 0 (a rate) | unset | A rate. |\n"
        "| `--top` | int, <= 5 | `3` | At most five. |\n"
        '| `--name` | str | `""` | A \\| name &lt;x>. |\n'
        "| `--tags` | list of str | empty | Tags. |\n")


# --- --config FILE.yaml ------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_under_the_command_line(tmp_path):
    preset = write(tmp_path / "run.yaml", "train_file: data.jsonl\nstep_jepa: true\nlbd: 0.5\nlora: true\n"
                                          "lora_rank: 8\nlearning_rate: 1e-5\nnum_epochs: 2\n")
    cfg = parse_config("train", ["--config", str(preset), "--lora_rank", "32", "--lbd", "0.1"])
    assert (cfg.train_file, cfg.step_jepa, cfg.lora) == ("data.jsonl", True, True)  # from the file
    assert (cfg.lora_rank, cfg.lbd) == (32, 0.1)  # given on the command line, even at its default value: it wins
    # YAML 1.1 reads 1e-5 as a string and 2 as an int: both are the float flags they name.
    assert cfg.learning_rate == 1e-5 and cfg.num_epochs == 2.0 and isinstance(cfg.num_epochs, float)
    assert parse_config("train", [f"--config={preset}"]).lora_rank == 8


def test_config_file_gives_a_required_flag(tmp_path):
    preset = write(tmp_path / "check.yaml", "file: rows.jsonl\nstep_jepa: true\n")
    assert parse_config("validate", ["--config", str(preset)]).file == "rows.jsonl"
    cfg = parse_config("validate", ["other.jsonl", "--config", str(preset)])  # the positional argument wins
    assert (cfg.file, cfg.step_jepa) == ("other.jsonl", True)
    preset = write(tmp_path / "evaluate.yaml", "model_path: m\ntest_file: t.jsonl\ncompare: [a, b]\nmax_examples: ~\n")
    assert parse_config("evaluate", ["--config", str(preset)]).model_paths() == ["m", "a", "b"]


@pytest.mark.parametrize(("text", "message"), [
    ("train_file: x\nlora_rnk: 8\nseeed: 1\n", "unknown keys lora_rnk, seeed"),
    ("train_file: x\nlora_rank: eight\n", "lora_rank must be of type int, got 'eight'"),
    ("train_file: x\nlora: 1\n", "lora must be of type bool, got 1"),
    ("train_file: x\nlora_rank: true\n", "lora_rank must be of type int, got True"),
    ("train_file: x\nlast_token: -2\n", "last_token must be of type str, got -2 (quote it)"),
    ("train_file: x\nmodel_name: ~\n", "model_name must be of type str, got None"),
    ("train_file: x\nlbd: [0.1]\n", "lbd must be of type float, got [0.1]"),
    ("- train_file\n- x\n", "expected a mapping of flag names to values"),
    ("train_file: x\n1: 2\n", "keys must be flag names, got 1"),
    ("train_file: [x\n", "not valid YAML at line 2, column 1"),
])
def test_a_bad_config_file_is_one_line_and_touches_nothing(tmp_path, capsys, text, message):
    preset = write(tmp_path / "bad.yaml", text)
    out = tmp_path / "out"
    error = one_line_error(capsys, "train", ["--config", str(preset), "--output_dir", str(out)])
    assert error.startswith(f"--config {preset}: ") and message in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_config_file_missing_or_abbreviated(tmp_path, capsys):
    assert one_line_error(capsys, "bench", ["--config", str(tmp_path / "no.yaml")]) == f"--config {tmp_path / 'no.yaml'}: no such file"
    preset = write(tmp_path / "bench.yaml", "lora_rank: 4\n")
    # argparse would take --conf for --config; the file would then be ignored without a word.
    assert one_line_error(capsys, "bench", ["--conf", str(preset)]) == "write --config in full (--config FILE.yaml)"


def test_every_command_lists_config_in_its_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.count("--config") >= 1, command
    # sweep keeps its own --config (flags.apply_yaml), declared once in its config.
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert capsys.readouterr().out.count("--config CONFIG") == 2  # usage line and option line, no second flag


def test_a_runs_train_config_json_reproduces_it(tiny_model_dirs, chat_file, tmp_path):
    """The file a run writes, fed back as --config, parses to the very config the run was given."""
    out = tmp_path / "run"
    argv = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(out),
            "--step_jepa", "--predictors", "1", "--lbd", "0.3", "--lora", "--lora_rank", "4", "--finetune_seed", "7",
            "--learning_rate", "1e-5", "--max_steps", "1", "--batch_size", "2", "--logging_steps", "1",
            "--last_token", "-2", "--no_bf16", "--debug", "0"]
    assert run_command("train", argv) == 0
    saved = out / "train_config.json"
    assert json.loads(saved.read_text())["learning_rate"] == 1e-5  # written as 1e-05, which YAML 1.1 reads as text
    given = parse_config("train", argv)
    assert parse_config("train", ["--config", str(saved)]) == given
    elsewhere = parse_config("train", ["--config", str(saved), "--output_dir", str(tmp_path / "again")])
    assert elsewhere == dataclasses.replace(given, output_dir=str(tmp_path / "again"))


# --- one definition ----------------------------------------------------------------------------------------------

def test_the_ledger_keeps_the_probes_eight_scalars():
    eight = ["pairs", "matched_cosine", "mismatched_cosine", "gap", "top1", "top5", "effective_rank_a",
             "effective_rank_b"]
    view = {key: float(index) for index, key in enumerate(eight)} | {"by_pair": {"1": {}}, "extra": 1.0}
    assert probe_scalars({"views": {"k0": view}}) == {"k0": {key: float(index) for index, key in enumerate(eight)}}


# --- docs/FLAGS.md -----------------------------------------------------------------------------------------------

def test_flags_doc_is_generated_from_the_configs():
    """docs/FLAGS.md is what scripts/flags_doc.py writes now: a changed flag without a regenerated file fails here."""
    doc = (ROOT / "docs" / "FLAGS.md").read_text(encoding="utf-8")
    assert doc == flags_markdown(), "docs/FLAGS.md is out of date: python scripts/flags_doc.py"
    # One section per command, each naming every field of its config.
    sections = doc.split("\n## stepjepa ")[1:]
    assert [section.split("\n")[0] for section in sections] == list(COMMANDS)
    for section, (target, _, _) in zip(sections, COMMANDS.values()):
        for flag in dataclasses.fields(load(target)):
            assert f"| `--{flag.name}`" in section, (section.split("\n")[0], flag.name)

"""The commands: the module, config dataclass and run function of each, and parsing flags into a config
(the command line's, a ``--config FILE.yaml``'s, and ``stepjepa sweep``'s check of its runs' flags before it starts
them); docs/FLAGS.md is generated from the same dataclasses."""

from __future__ import annotations

import importlib
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.flag_groups import BOUND_KEYS, markdown_table, type_name

# command -> (config "module:class", run "module:function", help); modules are imported only when used, and parsing
# imports only the config's leaf module.
COMMANDS = {
    "train": ("stepjepa.training.config:TrainConfig", "stepjepa.training.train:run_train",
              "fine-tune: regular, LLM-JEPA or Step-JEPA"),
    "prepare": ("stepjepa.data.config:PrepareConfig", "stepjepa.data.prepare:run_prepare",
                "convert GSM8K, traces or chats to training data"),
    "validate": ("stepjepa.data.config:ValidateConfig", "stepjepa.data.prepare:run_validate",
                 "check a chat JSONL file line by line"),
    "evaluate": ("stepjepa.evaluation.config:EvaluateConfig", "stepjepa.evaluation.evaluate:run_evaluate",
                 "accuracy (GSM8K, exact match, regex) of models"),
    "probe": ("stepjepa.evaluation.config:ProbeConfig", "stepjepa.evaluation.probe:run_probe",
              "held-out alignment of a model's JEPA views"),
    "bench": ("stepjepa.bench.config:BenchConfig", "stepjepa.bench.bench:run_bench",
              "time and memory of a training step per mode"),
    "sweep": ("stepjepa.experiments.config:SweepConfig", "stepjepa.experiments.sweep:run_sweep",
              "a resumable grid of train + evaluate runs"),
    "report": ("stepjepa.experiments.config:ReportConfig", "stepjepa.experiments.report:run_report",
               "tables and plots of a sweep's runs"),
}
# Commands whose first positional argument fills a field.
POSITIONAL = {"validate": "file", "report": "runs_dir"}


def load(target: str):
    """The object a ``"module:name"`` string names, importing its module."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


CONFIG_HELP = ("YAML (or JSON) file of this command's flags, keys the flag names without --; flags given on the "
               "command line override it. A run's train_config.json given to train reproduces the run.")


def _parser(prog: str, config_cls, config_flag: bool):
    from transformers import HfArgumentParser

    class OneLineParser(HfArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message}\n")

        def add_argument(self, *args, **kwargs):
            # A field's bounds are stepjepa's metadata (flag_groups.check_bounds), no argparse keyword.
            for key in BOUND_KEYS:
                kwargs.pop(key, None)
            return super().add_argument(*args, **kwargs)

    parser = OneLineParser(config_cls, prog=prog, description=(config_cls.__doc__ or "").strip())
    if config_flag:
        parser.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    return parser


def own_config_flag(config_cls) -> bool:
    """Whether the config reads ``--config`` itself (``stepjepa sweep``: flags.apply_yaml, where a flag given a
    non-default value wins) instead of through :func:`parse_config`."""
    return any(flag.name == "config" for flag in fields(config_cls))


def parse_config(command: str, argv: list[str], prog: str | None = None):
    """Parse ``argv`` into the command's config dataclass (its ``__post_init__`` validates). A ``--config FILE``
    gives the parser its defaults, so every flag on the command line overrides the file (as TRL's TrlParser)."""
    config_cls = load(COMMANDS[command][0])
    field = POSITIONAL.get(command)
    if field and argv and not argv[0].startswith("-"):
        argv = [f"--{field}", argv[0], *argv[1:]]
    config_flag = not own_config_flag(config_cls)
    parser = _parser(prog or f"stepjepa {command}", config_cls, config_flag)
    path = config_file(argv) if config_flag else None
    if path is not None:
        values = config_file_values(config_cls, Path(path))
        parser.set_defaults(**values)
        for action in parser._actions:  # a required flag (validate's file, prepare's output) the file gives
            if action.dest in values:
                action.required = False
    config, *rest, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    if rest and vars(rest[0]).get("config") != path:
        raise UsageError("write --config in full (--config FILE.yaml)")  # argparse took an abbreviation of it
    return config


def config_file(argv: list[str]) -> str | None:
    """The file of the last ``--config FILE`` or ``--config=FILE`` in ``argv`` (argparse's choice too), if any."""
    path = None
    for index, word in enumerate(argv):
        if word == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif word.startswith("--config="):
            path = word.partition("=")[2]
    return path


def config_file_values(config_cls, path: Path) -> dict[str, Any]:
    """The flags a YAML (or JSON) mapping of flag names to values gives a command, each as its field's type; a missing
    or unreadable file, an unknown key and a value of another type are one line each."""
    from stepjepa.extras import require

    require("yaml", "--config")
    import yaml

    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text (byte at offset {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"--config {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values")
    not_names = [key for key in values if not isinstance(key, str)]
    if not_names:
        raise UsageError(f"--config {path}: keys must be flag names, got {', '.join(map(repr, not_names))}")
    kinds = typing.get_type_hints(config_cls)
    unknown = sorted(set(values) - {flag.name for flag in fields(config_cls) if flag.init})
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}")
    typed = {}
    for name, value in values.items():
        try:
            typed[name] = as_field_type(kinds[name], value)
        except TypeError:
            hint = " (quote it)" if type_name(kinds[name]) == "str" and isinstance(value, (int, float)) else ""
            raise UsageError(f"--config {path}: {name} must be of type {type_name(kinds[name])}, got {value!r}{hint}") from None
    return typed


def as_field_type(kind: Any, value: Any) -> Any:
    """``value`` (from YAML) as a field of type ``kind`` holds it, or TypeError. Strict: a bool is no int and a number
    no string; an int is a float, and so is a string that reads as one (YAML 1.1 reads ``1e-5`` as a string)."""
    args = typing.get_args(kind)
    if value is None and type(None) in args:
        return None
    if typing.get_origin(kind) is list and isinstance(value, list):
        return [as_field_type(args[0], item) for item in value]
    if args and typing.get_origin(kind) is not list:  # Optional[X]
        return as_field_type(next(arg for arg in args if arg is not type(None)), value)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is str and isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is no {type_name(kind)}")


def flags_markdown() -> str:
    """docs/FLAGS.md: one table of flags per command, from the config dataclasses (scripts/flags_doc.py writes it)."""
    parts = ["# Flags of every command\n",
             "Generated from the commands' config dataclasses by `python scripts/flags_doc.py` (a test keeps this file "
             "current); `stepjepa COMMAND --help` prints the same. Bounds are checked before anything loads; a value "
             "out of them is one line and exit status 2.\n"]
    for command, (target, _, text) in COMMANDS.items():
        config_cls = load(target)
        parts.append(f"## stepjepa {command}\n")
        lines = [text[0].upper() + text[1:] + "."]
        if command in POSITIONAL:
            lines.append(f"The first argument, when it is not a flag, is `--{POSITIONAL[command]}`.")
        parts.append(" ".join(lines) + "\n")
        table = markdown_table(config_cls)
        if not own_config_flag(config_cls):
            table += f"| `--config` | str | unset | {CONFIG_HELP} |\n"
        parts.append(table)
    return "\n".join(parts)

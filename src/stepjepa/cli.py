"""The command line: one dataclass per command, parsed by transformers' HfArgumentParser; errors are one line."""

from __future__ import annotations

import importlib
import sys


# command -> (module, config dataclass, run function, help); modules are imported only when used.
COMMANDS = {
    "train": ("stepjepa.train", "TrainConfig", "run_train", "fine-tune: regular, LLM-JEPA or Step-JEPA"),
    "prepare": ("stepjepa.prepare", "PrepareConfig", "run_prepare", "convert GSM8K, traces or chats to training data"),
    "validate": ("stepjepa.prepare", "ValidateConfig", "run_validate", "check a chat JSONL file line by line"),
    "evaluate": ("stepjepa.evaluate", "EvaluateConfig", "run_evaluate", "accuracy (GSM8K, exact match, regex) of models"),
    "probe": ("stepjepa.probe", "ProbeConfig", "run_probe", "held-out alignment of a model's JEPA views"),
    "bench": ("stepjepa.bench", "BenchConfig", "run_bench", "time and memory of a training step per mode"),
    "sweep": ("stepjepa.sweep", "SweepConfig", "run_sweep", "a resumable grid of train + evaluate runs"),
    "report": ("stepjepa.report", "ReportConfig", "run_report", "tables and plots of a sweep's runs"),
}
# Commands whose first positional argument fills a field.
POSITIONAL = {"validate": "file", "report": "runs_dir"}


def _parser(prog: str, config_cls):
    from transformers import HfArgumentParser

    class OneLineParser(HfArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message}\n")

    return OneLineParser(config_cls, prog=prog, description=(config_cls.__doc__ or "").strip())


def parse_config(command: str, argv: list[str], prog: str | None = None):
    """Parse ``argv`` into the command's config dataclass (its ``__post_init__`` validates)."""
    module, cls_name, _, _ = COMMANDS[command]
    config_cls = getattr(importlib.import_module(module), cls_name)
    field = POSITIONAL.get(command)
    if field and argv and not argv[0].startswith("-"):
        argv = [f"--{field}", argv[0], *argv[1:]]
    parser = _parser(prog or f"stepjepa {command}", config_cls)
    config, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise ValueError(f"unrecognized arguments: {' '.join(unknown)}")
    return config


def _raised_here(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by stepjepa's own code (a deliberate message), not inside a library it calls."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("stepjepa")


def run_command(command: str, argv: list[str], prog: str | None = None) -> int:
    """Parse, validate and run one command; bad input ends in one line on stderr and status 2.

    Bad input is a ValueError that stepjepa raises (a ValueError from inside torch or transformers is a bug
    and keeps its traceback) or an OSError (FileNotFoundError included).
    """
    prog = prog or f"stepjepa {command}"
    try:
        config = parse_config(command, argv, prog)
        module, _, run_name, _ = COMMANDS[command]
        return int(getattr(importlib.import_module(module), run_name)(config) or 0)
    except ValueError as exc:
        if not _raised_here(exc):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk, a path made read-only or removed meanwhile: the system's words and the file, one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A second Ctrl-C during training, or one in a command without its own handler.
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: stepjepa COMMAND [flags]   (stepjepa COMMAND --help for its flags)\n\ncommands:")
        for name, (*_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"stepjepa: error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])

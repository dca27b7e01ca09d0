"""The commands: the module, config dataclass and run function of each, and parsing flags into a config
(the command line's, and ``stepjepa sweep``'s check of its runs' flags before it starts them)."""

from __future__ import annotations

import importlib

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

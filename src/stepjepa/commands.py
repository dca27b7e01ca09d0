"""The commands: the module, config dataclass and run function of each, and parsing flags into a config
(the command line's, and ``stepjepa sweep``'s check of its runs' flags before it starts them)."""

from __future__ import annotations

import importlib

from stepjepa.errors import UsageError

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


def _parser(prog: str, config_cls):
    from transformers import HfArgumentParser

    class OneLineParser(HfArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message}\n")

    return OneLineParser(config_cls, prog=prog, description=(config_cls.__doc__ or "").strip())


def parse_config(command: str, argv: list[str], prog: str | None = None):
    """Parse ``argv`` into the command's config dataclass (its ``__post_init__`` validates)."""
    config_cls = load(COMMANDS[command][0])
    field = POSITIONAL.get(command)
    if field and argv and not argv[0].startswith("-"):
        argv = [f"--{field}", argv[0], *argv[1:]]
    parser = _parser(prog or f"stepjepa {command}", config_cls)
    config, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    return config

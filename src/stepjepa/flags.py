"""The flags of every command: help metadata of their fields and the checks applied before anything loads."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any


# numpy, and through it transformers' set_seed, takes seeds in [0, 2**32).
SEED_LIMIT = 2**32


def check_finite_floats(config: Any) -> None:
    """Refuse NaN and infinity in every float flag (or list of floats) of a command's config dataclass."""
    for flag in fields(config):
        value = getattr(config, flag.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"--{flag.name} must be a finite number, got {item}")


def check_seed(name: str, value: int) -> None:
    """A seed must be in [0, 2**32): what numpy, torch and Python's random all accept."""
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"--{name} must be in [0, 2**32), got {value}")


def field_help(text: str, **extra: Any) -> dict[str, Any]:
    """A config field's metadata for HfArgumentParser: its ``--help`` text and further argparse keywords
    (e.g. ``aliases=["--finetune_seed"]``)."""
    return {"help": text, **extra}

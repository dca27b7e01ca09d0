"""The flag groups several commands share, each a dataclass base with its own check, and bounds declared beside a
field (``metadata={"min": 1}``) with one check for all: a flag is declared and checked once.

A command's config lists its groups as bases and calls ``super().__post_init__()`` first: the root
:class:`Flags` refuses NaN and infinity and values out of bounds, then each group runs its check once. Dataclasses
(and so ``--help`` and docs/FLAGS.md) put the last base's fields first and the command's own fields after all
bases: bases are listed in reverse of the order ``--help`` shows them. A command that needs another default or help
for a group's flag redeclares it with :func:`override`, which keeps the group's position, bounds and checks.
"""

from __future__ import annotations

import re
import typing
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Optional

from stepjepa.core.errors import UsageError
from stepjepa.flags import SEED_LIMIT, check_finite_floats
from stepjepa.flags import field_help as _help
from stepjepa.models import EMBEDDED_ALIAS
from stepjepa.precision import BF16_HELP, BOTH_FLAGS, NO_BF16_HELP, check_device

# Metadata keys of a field's bounds (``reason``: why, shown in the message); the parser does not pass them to
# argparse. ``min``/``max`` are inclusive, ``above``/``below`` exclusive; None (an unset optional flag) is not checked.
BOUND_KEYS = ("min", "max", "above", "below", "reason")

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def _number(value: Any) -> str:
    """A bound as people write it: a large power of two as ``2**32``."""
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return str(value)


def bound_text(metadata: typing.Mapping[str, Any]) -> str | None:
    """The rule a field's bounds state (``">= 1"``, ``"in [0, 2**32)"``), or None without bounds."""
    low = (("[", _number(metadata["min"])) if "min" in metadata
           else ("(", _number(metadata["above"])) if "above" in metadata else None)
    high = (("]", _number(metadata["max"])) if "max" in metadata
            else (")", _number(metadata["below"])) if "below" in metadata else None)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return None


def within(value: Any, metadata: typing.Mapping[str, Any]) -> bool:
    """Whether ``value`` keeps the bounds of ``metadata`` (None, an unset optional flag, always does)."""
    if value is None:
        return True
    return ((metadata.get("min") is None or value >= metadata["min"])
            and (metadata.get("max") is None or value <= metadata["max"])
            and (metadata.get("above") is None or value > metadata["above"])
            and (metadata.get("below") is None or value < metadata["below"]))


def check_bounds(config: Any) -> None:
    """Refuse the first field of ``config`` outside the bounds its metadata declares, in one line."""
    for flag in fields(config):
        value = getattr(config, flag.name)
        rule = bound_text(flag.metadata)
        if rule and not within(value, flag.metadata):
            reason = f" ({flag.metadata['reason']})" if "reason" in flag.metadata else ""
            raise UsageError(f"--{flag.name} must be {rule}{reason}, got {value}")


def override(group: type, name: str, **changes: Any) -> Any:
    """The field ``name`` of ``group`` with another ``default``, ``help`` or argparse keyword for one command; its
    bounds (and the group's check) stay. Use as ``seed: int = override(SeedFlags, "seed", default=0)``."""
    base: Field = group.__dataclass_fields__[name]
    default = changes.pop("default", base.default)
    return field(default=default, metadata={**base.metadata, **changes})


@dataclass
class Flags:
    """The root of every command's config: no NaN or infinity in a float flag, every flag within its bounds."""

    def __post_init__(self) -> None:
        check_finite_floats(self)
        check_bounds(self)


@dataclass
class ModelFlags(Flags):
    """The model a command starts from."""

    model_name: str = field(default=EMBEDDED_ALIAS, metadata=_help(
        f"Hugging Face id, local directory, or the embedded '{EMBEDDED_ALIAS}' (no network needed)."))


@dataclass
class StepFlags(Flags):
    """What a training step is made of, shared by train and bench."""

    max_length: int = field(default=512, metadata=_help(
        "Maximum conversation tokens; longer ones are truncated.", min=1))
    predictors: int = field(default=0, metadata=_help(
        "K predictor tokens <|predictor_1..K|> (0: identity predictor).", min=0))
    learning_rate: Optional[float] = field(default=None, metadata=_help(
        "Peak learning rate (default 2e-4 with --lora, else 2e-5).", above=0))


@dataclass
class LoraFlags(Flags):
    """LoRA adapters instead of all weights (stepjepa.models.apply_lora)."""

    lora: bool = field(default=False, metadata=_help("LoRA fine-tuning (rank r, alpha 2r, every linear projection)."))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank.", min=1))


@dataclass
class SeedFlags(Flags):
    """One seed, in the range numpy (and through it transformers' set_seed), torch and Python's random all accept."""

    seed: int = field(default=42, metadata=_help("Random seed.", min=0, below=SEED_LIMIT))


@dataclass
class DeviceFlags(Flags):
    """Where a command computes; a device this machine lacks is refused before any model loads."""

    device: str = field(default="auto", metadata=_help(
        "auto (cuda if available, else mps, else cpu), cpu, mps, cuda or cuda:N."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise UsageError(f"--device must be auto, cpu, mps, cuda or cuda:N, got '{self.device}'")
        check_device(self.device)


@dataclass
class PrecisionFlags(Flags):
    """bf16 or float32, or neither flag: auto (stepjepa.precision.use_bf16)."""

    bf16: bool = field(default=False, metadata=_help(BF16_HELP))
    no_bf16: bool = field(default=False, metadata=_help(NO_BF16_HELP))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_precision_flags(self.bf16, self.no_bf16)


def check_precision_flags(bf16: bool, no_bf16: bool) -> None:
    """``--bf16`` and ``--no_bf16`` together contradict each other (neither: auto)."""
    if bf16 and no_bf16:
        raise UsageError(BOTH_FLAGS)


# --- documentation ----------------------------------------------------------------------------------------------

def type_name(kind: Any) -> str:
    """``int``, ``float``, ``list of str``, ... of a field's resolved type (an optional X is an X left unset)."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if typing.get_origin(kind) is list:
        return f"list of {type_name(args[0])}"
    if args:
        return type_name(args[0])
    return getattr(kind, "__name__", str(kind))


def default_text(flag: Field) -> str:
    if flag.default_factory is not MISSING:
        value = flag.default_factory()
    elif flag.default is MISSING:
        return "required"
    else:
        value = flag.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "`" + " ".join(map(str, value)) + "`" if value else "empty"
    return f"`{value}`" if value != "" else '`""`'


def markdown_table(config_cls: type) -> str:
    """One Markdown table of a config dataclass's flags: flag (and aliases), type and bounds, default, help."""
    kinds = typing.get_type_hints(config_cls)
    lines = ["| flag | type | default | help |", "|---|---|---|---|"]
    for flag in fields(config_cls):
        names = [f"`--{flag.name}`", *(f"`{alias}`" for alias in flag.metadata.get("aliases", []))]
        if kinds[flag.name] is bool and flag.default is True:
            names.append(f"`--no_{flag.name}`")
        kind = type_name(kinds[flag.name])
        rule = bound_text(flag.metadata)
        if rule:
            kind += f", {rule}" + (f" ({flag.metadata['reason']})" if "reason" in flag.metadata else "")
        row = [", ".join(names), kind, default_text(flag), flag.metadata.get("help", "")]
        # Escaped: a | would end the cell, a <word> would be taken for an HTML tag.
        lines.append("| " + " | ".join(re.sub(r"<(?=[A-Za-z/!?])", "&lt;", cell.replace("|", "\\|")) for cell in row)
                     + " |")
    return "\n".join(lines) + "\n"

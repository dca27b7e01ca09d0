"""The flags of every command: help metadata of their fields, the checks applied before anything loads, and
the reading of list, boolean, quoted command-line and YAML values into a config."""

from __future__ import annotations

import math
import shlex
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from stepjepa.core.errors import UsageError

# numpy, and through it transformers' set_seed, takes seeds in [0, 2**32).
SEED_LIMIT = 2**32


def check_finite_floats(config: Any) -> None:
    """Refuse NaN and infinity in every float flag (or list of floats) of a command's config dataclass."""
    for flag in fields(config):
        value = getattr(config, flag.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise UsageError(f"--{flag.name} must be a finite number, got {item}")


def check_seed(name: str, value: int) -> None:
    """A seed must be in [0, 2**32): what numpy, torch and Python's random all accept."""
    if not 0 <= value < SEED_LIMIT:
        raise UsageError(f"--{name} must be in [0, 2**32), got {value}")


def field_help(text: str, **extra: Any) -> dict[str, Any]:
    """A config field's metadata for HfArgumentParser: its ``--help`` text and further argparse keywords
    (e.g. ``aliases=["--finetune_seed"]``)."""
    return {"help": text, **extra}


def split_flags(text: str, name: str) -> list[str]:
    """The words of a flag that holds a quoted command line (``--train_args '--lora --max_steps 5'``)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--{name}: {exc}") from None


def _is_kind(item: Any, kind: type) -> bool:
    """Whether ``item`` is a ``kind`` value as written, strictly: bool is no int (Python's bool is an int
    subclass, so ``seeds: true`` would pass as 1), a float is no int (``seeds: [1.9]`` would become 1); a float
    takes an int, and a number in words, as PyYAML reads ``1e-3`` (YAML 1.1 wants ``1.0e-3``)."""
    if isinstance(item, bool):
        return kind is bool
    if isinstance(item, str) and kind in (int, float):
        try:
            kind(item)
        except ValueError:
            return False
        return True
    if kind is float:
        return isinstance(item, (int, float))
    return isinstance(item, kind)


def as_list(value: Any, kind: type, name: str) -> list:
    """A list of ``kind`` from a flag's list or a YAML scalar or list, without repeats; an item of another type
    (``seeds: [1.9]``, ``seeds: true``, ``lbd: true``) raises instead of being converted."""
    items = value if isinstance(value, list) else [value]
    bad = [item for item in items if not _is_kind(item, kind)]
    if bad:
        raise UsageError(f"--{name}: expected {kind.__name__} values, got {', '.join(map(repr, bad))}")
    return list(dict.fromkeys(kind(item) for item in items))


def as_bools(value: Any, name: str) -> list[bool]:
    """Booleans, without repeats, from flag words (true/false, yes/no, 1/0) or YAML booleans."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    items = value if isinstance(value, list) else [value]
    bad = [item for item in items if not isinstance(item, (bool, str)) or str(item).lower() not in words]
    if bad:
        raise UsageError(f"--{name}: expected true or false, got {', '.join(map(str, bad))}")
    return list(dict.fromkeys(words[str(item).lower()] for item in items))


def apply_yaml(config: Any, path: Path, scalar_types: dict[str, type]) -> None:
    """Fill the fields of a config dataclass still at their defaults from a YAML mapping of flag names to values
    (``scalar_types``: the type a YAML value of each non-list field must have)."""
    from stepjepa.extras import require

    require("yaml", "--config")
    import yaml

    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text (byte at offset {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values")
    known = {f.name: f for f in fields(config) if f.name != "config"}
    not_names = [key for key in values if not isinstance(key, str)]
    if not_names:
        raise UsageError(f"--config {path}: keys must be flag names, got {', '.join(map(repr, not_names))}")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}")
    for name, value in values.items():
        field = known[name]
        default = field.default_factory() if field.default_factory is not MISSING else field.default
        kind = scalar_types.get(name)
        if kind and not _is_kind(value, kind) and not (value is None and default is None):
            raise UsageError(f"--config {path}: {name} must be a {kind.__name__}, got {value!r}")
        if getattr(config, name) == default:
            setattr(config, name, value)

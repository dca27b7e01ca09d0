"""The training modes, a closed set: a mode is checked once, where it enters (a flag, an Objective)."""

from __future__ import annotations

from typing import Literal, get_args

from stepjepa.core.errors import UsageError

Mode = Literal["regular", "llm_jepa", "step_jepa"]
MODES: tuple[Mode, ...] = get_args(Mode)


def check_mode(value: str, flag: str = "mode", allowed: tuple[Mode, ...] = MODES) -> Mode:
    """``value`` as a :data:`Mode`; ValueError naming ``--flag`` and the choices when it is not one of ``allowed``."""
    if value not in allowed:
        raise UsageError(f"--{flag} must be one of {', '.join(allowed)}, got {value!r}")
    return value

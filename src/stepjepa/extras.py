"""Optional dependencies: each belongs to an extra of the package, and its absence is one line naming that extra."""

from __future__ import annotations

import importlib.util

from stepjepa.core.errors import UsageError

# importable module -> the extra that installs it (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {"gguf": "embedded", "matplotlib": "plot", "scipy": "stats", "yaml": "yaml", "tensorboard": "tensorboard",
          "automata": "regex"}


def require(module: str, purpose: str) -> None:
    """Raise one line (``pip install 'stepjepa[EXTRA]'``) when ``module`` of an extra is not installed; a
    UsageError, so that the command line shows it as such (cli.py)."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{purpose} needs the package {module}: pip install 'stepjepa[{EXTRAS[module]}]'")

"""Provenance: the git commit of the checkout the package is tracked in, or None (an installed copy, no git)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import stepjepa.machine as machine_module
from stepjepa.machine import git_commit, provenance

PACKAGE = Path(machine_module.__file__).resolve().parent


def test_commit_of_the_checkout_is_git_head() -> None:
    """Compared with git's own answer for the directory the package lies in (skipped outside a checkout)."""
    head = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        import pytest

        pytest.skip("the package under test is not in a git checkout")
    commit, dirty = git_commit()
    assert commit == head.stdout.strip() and isinstance(dirty, bool)


def test_a_copy_outside_any_checkout_has_no_commit(tmp_path) -> None:
    """The package copied to a bare folder (as into site-packages): commit and dirty are None, no error."""
    shutil.copytree(PACKAGE, tmp_path / "stepjepa", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import json; from stepjepa.machine import git_commit; print(json.dumps(git_commit()))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [None, None]


def test_without_git_the_commit_is_none(monkeypatch) -> None:
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    git_commit.cache_clear()
    monkeypatch.setattr(machine_module.subprocess, "run", no_git)
    try:
        assert git_commit() == (None, None)
        record = provenance(None, "bf16")
    finally:
        git_commit.cache_clear()
    assert (record["git_commit"], record["git_dirty"], record["precision"]) == (None, None, "bf16")
    assert record["stepjepa_version"] == __import__("stepjepa").__version__
    assert record["command"] == shlex.join(sys.argv)
    assert set(record["machine"]) == {"cpu"}  # no device: the CPU's name, without importing torch


def test_a_module_run_is_named_as_such(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/src/stepjepa/__main__.py", "evaluate", "--model_path", "a b"])
    assert machine_module.command_line() == f"{shlex.quote(sys.executable)} -m stepjepa evaluate --model_path 'a b'"

"""Dependencies: every import declared in pyproject.toml; a missing extra is one line naming it."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import tomllib

from stepjepa.cli import main
from stepjepa.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
# Import name -> the distribution that provides it, where the two differ.
DISTRIBUTIONS = {"yaml": "pyyaml", "automata": "automata-lib", "huggingface_hub": "huggingface-hub"}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_every_third_party_import_of_the_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    imported = set()
    for path in (ROOT / "src" / "stepjepa").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"stepjepa", "__future__"}
    assert {"torch", "transformers", "datasets", "tqdm", "yaml"} <= third_party  # the scan sees the imports
    undeclared = {m for m in third_party if DISTRIBUTIONS.get(m, m) not in core | set().union(*extras.values())}
    assert not undeclared
    # Every optional module lives in the extra the one-line message names, and only there (not in the core).
    for module, extra in EXTRAS.items():
        assert DISTRIBUTIONS.get(module, module) in extras[extra] and DISTRIBUTIONS.get(module, module) not in core
    # `all` is every extra (what the Makefile installs).
    (everything,) = project["optional-dependencies"]["all"]
    assert set(re.fullmatch(r"stepjepa\[(.*)\]", everything).group(1).split(",")) == set(EXTRAS.values())


@pytest.fixture
def without(monkeypatch):
    """Hide one importable module from ``find_spec`` (as if its extra were not installed)."""

    def hide(module: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *args: None if name == module else real(name, *args))

    return hide


def test_report_without_matplotlib_names_the_plot_extra(tmp_path, capsys, without):
    without("matplotlib")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "stepjepa report: error: stepjepa report (plots) needs the package matplotlib: " \
                  "pip install 'stepjepa[plot]'\n"


def test_report_to_tensorboard_without_it_names_the_extra(tmp_path, capsys, without):
    without("tensorboard")
    assert main(["train", "--train_file", "x.jsonl", "--report_to", "tensorboard"]) == 2
    assert "pip install 'stepjepa[tensorboard]'" in capsys.readouterr().err


def test_regex_equivalence_without_automata_names_the_extra(without):
    from stepjepa.evaluation.regexes import regex_equivalent

    assert regex_equivalent("a", "a")  # the same tree: no automaton needed
    without("automata")
    with pytest.raises(ValueError, match=r"pip install 'stepjepa\[regex\]'"):
        regex_equivalent("a|b", "b|a")


def test_sweep_config_without_yaml_names_the_extra(tmp_path, capsys, without):
    preset = tmp_path / "s.yaml"
    preset.write_text(json.dumps({"seeds": [1]}))
    without("yaml")
    assert main(["sweep", "--config", str(preset)]) == 2
    assert "pip install 'stepjepa[yaml]'" in capsys.readouterr().err

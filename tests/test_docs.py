"""The README and docs/ cannot rot: every `stepjepa ...` command in their fenced shell blocks parses with the
command's own flags, every relative link points to a file of the repository, and nothing points outside it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from stepjepa.commands import COMMANDS, parse_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Written by scripts/flags_doc.py; a link to it is accepted only while that script is not in the tree yet.
GENERATED = {ROOT / "docs" / "FLAGS.md": ROOT / "scripts" / "flags_doc.py"}
README_MAX_LINES = 250
# Input files a command checks for while parsing; the test makes an empty one in a scratch directory.
CHECKED_AT_PARSE = ("--data_file",)


def shell_commands(page: Path) -> list[str]:
    """The `stepjepa ...` lines of a page's fenced bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("stepjepa ") or line.startswith("OMP_NUM_THREADS=1 stepjepa "):
                words = shlex.split(line, comments=True)
                commands.append(shlex.join(words[words.index("stepjepa"):]))
    return commands


DOC_COMMANDS = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in shell_commands(page)]


def test_the_readme_quickstart_has_every_step():
    """prepare, validate, train (both modes), evaluate, probe, sweep and report, so the parse test below has them."""
    commands = shell_commands(ROOT / "README.md")
    assert {shlex.split(line)[1] for line in commands} >= {
        "prepare", "validate", "train", "evaluate", "probe", "sweep", "report"}
    modes = {parse_config("train", shlex.split(line)[2:]).mode for line in commands if line.startswith("stepjepa train")}
    assert modes == {"regular", "step_jepa"}


@pytest.mark.parametrize(("page", "line"), DOC_COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(DOC_COMMANDS)])
def test_documented_command_parses(page, line, tmp_path, monkeypatch):
    """The command exists and its flags parse into its config (which checks values and contradictions)."""
    words = shlex.split(line)
    assert words[1] in COMMANDS, f"{page}: unknown command in {line!r}"
    monkeypatch.chdir(tmp_path)
    for flag in CHECKED_AT_PARSE:
        if flag in words:
            Path(words[words.index(flag) + 1]).touch()
    parse_config(words[1], words[2:])


def link_targets(page: Path) -> list[str]:
    """Targets of Markdown links and images, ``[text](target)``, outside code spans and fenced blocks."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_anchor_rule_by_hand():
    """`## Step pairs` -> step-pairs; `## What a run writes` -> what-a-run-writes; `## Token- and pair-weighted
    losses` -> token--and-pair-weighted-losses (the hyphen stays, the space becomes a second one)."""
    page = ROOT / "docs" / "DESIGN.md"
    assert {"step-pairs", "token--and-pair-weighted-losses"} <= heading_anchors(page)
    assert "what-a-run-writes" in heading_anchors(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_point_to_files_of_the_repository(page):
    broken = []
    for target in link_targets(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not path.exists():
            if path in GENERATED and not GENERATED[path].exists():
                continue
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_a_front_page_and_names_no_file_outside_the_clone():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for page in PAGES:
        assert "../shared" not in page.read_text(encoding="utf-8"), page
    assert "arXiv:2509.14530" in text  # the LLM-JEPA paper is cited


def gsm8k_rows(count: int, offset: int) -> str:
    """GSM8K rows as published: two calculation lines, then `#### answer`."""
    rows = []
    for i in range(offset, offset + count):
        a, b = i + 2, i + 3
        rows.append({"question": f"Ann has {a} apples and buys {b} more, then doubles them. How many?",
                     "answer": f"Ann has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n"
                               f"Doubled: {a + b}*2 = <<{a + b}*2={2 * (a + b)}>>{2 * (a + b)}.\n#### {2 * (a + b)}"})
    return "".join(__import__("json").dumps(row) + "\n" for row in rows)


# Appended to the README's commands (a later flag wins): sizes a test can afford (the sweep skips the probe, which
# the probe command before it has run).
TINY_RUN = {
    "train": ["--max_steps", "2", "--batch_size", "2", "--debug", "0"],
    "evaluate": ["--max_examples", "2", "--max_new_tokens", "8"],
    "probe": ["--debug", "0"],
    "sweep": ["--seeds", "82", "--max_examples", "2", "--eval_args", "--max_new_tokens 8",
              "--train_args", "--lora --max_steps 2 --batch_size 2 --debug 0", "--no_base", "--no_probe"],
}


@pytest.mark.slow
def test_the_readme_quickstart_runs_on_a_tiny_model(tiny_model_dirs, tmp_path, monkeypatch):
    """Every quickstart command in order, as written plus TINY_RUN and the tiny model, from a directory holding
    only the user's two files; each ends with status 0 and leaves the files the next one reads."""
    from stepjepa.cli import run_command

    monkeypatch.chdir(tmp_path)
    Path("my_train.jsonl").write_text(gsm8k_rows(12, 0))
    Path("my_test.jsonl").write_text(gsm8k_rows(4, 100))
    model = ["--model_name", str(tiny_model_dirs["llama"])]
    for line in shell_commands(ROOT / "README.md"):
        words = shlex.split(line)
        command, argv = words[1], words[2:] + TINY_RUN.get(words[1], [])
        argv += model if command in ("train", "sweep") else []
        assert run_command(command, argv) == 0, line
    assert Path("runs/step_jepa/adapter/adapter_config.json").is_file()
    assert Path("runs/step_jepa/probe.json").is_file() and Path("runs/step_jepa/eval_summary.json").is_file()
    assert Path("runs/sweep/report.md").is_file()

"""Bad input through the command line: one line naming the problem, exit status 2, file system unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stepjepa.cli import main

GOOD = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"},
                     {"role": "assistant", "content": "One.\n\nTwo.\n\nThree."}]}


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def bad_data_cases(tmp: Path) -> list[tuple[Path, str]]:
    good = json.dumps(GOOD)
    swapped = dict(GOOD, messages=[GOOD["messages"][0], GOOD["messages"][2], GOOD["messages"][1]])
    no_user = dict(GOOD, messages=[GOOD["messages"][0], GOOD["messages"][2]])
    empty = dict(GOOD, messages=[*GOOD["messages"][:2], {"role": "assistant", "content": "  "}])
    number = dict(GOOD, messages=[GOOD["messages"][0], {"role": "user", "content": 7}, GOOD["messages"][2]])
    (tmp / "empty.jsonl").write_text("\n")
    return [
        (tmp / "missing.jsonl", "missing.jsonl: no such file"),
        (tmp / "empty.jsonl", "empty.jsonl: file is empty"),
        (write_rows(tmp / "json.jsonl", [good, "{oops"]), "json.jsonl:2: invalid JSON"),
        (write_rows(tmp / "order.jsonl", [good, good, json.dumps(swapped)]), "order.jsonl:3: roles are"),
        (write_rows(tmp / "roles.jsonl", [json.dumps(no_user)]), "roles.jsonl:1: roles are ['system', 'assistant']"),
        (write_rows(tmp / "blank.jsonl", [json.dumps(empty)]), "blank.jsonl:1: assistant content is empty"),
        (write_rows(tmp / "type.jsonl", [json.dumps(number)]), "type.jsonl:1: user content is not a string"),
    ]


def run_and_check(capsys, root: Path, argv: list[str], message: str) -> None:
    before = snapshot(root)
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err and err.count("\n") == 1, err
    assert snapshot(root) == before


@pytest.mark.parametrize("case", range(7))
def test_bad_train_file(tmp_path, capsys, tiny_model_dirs, case):
    data = tmp_path / "data"
    data.mkdir()
    path, message = bad_data_cases(data)[case]
    argv = ["train", "--train_file", str(path), "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(tmp_path / "out")]
    run_and_check(capsys, tmp_path, argv, message)


def test_unknown_model_names_the_embedded_alias(tmp_path, capsys):
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    argv = ["train", "--train_file", str(path), "--model_name", "nobody/no-such-model", "--output_dir", str(tmp_path / "o")]
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'nobody/no-such-model' is neither a local directory nor reachable" in err and err.count("\n") == 1
    assert "smollm2-135m-instruct" in err and "network" in err  # where to turn
    assert snapshot(tmp_path) == before


def test_tokenizer_without_chat_template(tmp_path, capsys, tiny_model_dirs):
    model = tmp_path / "plain"
    shutil.copytree(tiny_model_dirs["gpt2"], model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    argv = ["train", "--train_file", str(path), "--model_name", str(model), "--output_dir", str(tmp_path / "o")]
    run_and_check(capsys, tmp_path, argv, "has no chat template")


def test_max_length_too_small_for_any_example(tmp_path, capsys, tiny_model_dirs):
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)] * 3)
    argv = ["train", "--train_file", str(path), "--model_name", str(tiny_model_dirs["gpt2"]),
            "--max_length", "4", "--output_dir", str(tmp_path / "o")]
    run_and_check(capsys, tmp_path, argv, "--max_length 4 leaves no assistant token in any example")


def test_step2_cut_by_truncation_trains_lm_only_and_is_counted(tmp_path, capsys, tiny_model_dirs):
    long_step2 = dict(GOOD, messages=[*GOOD["messages"][:2], {"role": "assistant", "content":
                                                              "One.\n\n" + "Two is long. " * 40 + "\n\nThree."}])
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps(long_step2)])
    argv = ["train", "--train_file", str(path), "--model_name", str(tiny_model_dirs["gpt2"]), "--step_jepa",
            "--max_length", "80", "--output_dir", str(tmp_path / "o"), "--debug", "7"]
    assert main(argv) == 0
    assert "1 LM-only (views cut by --max_length)" in capsys.readouterr().out

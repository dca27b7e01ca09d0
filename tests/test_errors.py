"""Bad input through the command line: one line naming the problem, exit status 2, file system unchanged."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

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
        (latin1_file(tmp / "latin1.jsonl"), "latin1.jsonl:2: not UTF-8 text (byte 0xe9 at column "),
    ]


def latin1_file(path: Path) -> Path:
    """A good line, then one saved as Latin-1 by some editor: its 'é' is the lone byte 0xe9."""
    bad = json.dumps(GOOD, ensure_ascii=False).replace("Q?", "Caf\u00e9?", 1).encode("latin-1")
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n")
    return path


def run_and_check(capsys, root: Path, argv: list[str], message: str) -> None:
    before = snapshot(root)
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert message in err and err.count("\n") == 1, err
    assert snapshot(root) == before


@pytest.mark.parametrize("case", range(8))
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


# --- flags: finite, in range, consistent -----------------------------------------------------------------------

BAD_FLAGS = [
    (["train", "--lbd", "nan"], "--lbd must be a finite number, got nan"),
    (["train", "--gamma", "nan"], "--gamma must be a finite number, got nan"),
    (["train", "--lbd", "inf"], "--lbd must be a finite number, got inf"),
    (["train", "--learning_rate", "nan"], "--learning_rate must be a finite number, got nan"),
    (["train", "--num_epochs", "nan"], "--num_epochs must be a finite number, got nan"),
    (["train", "--warmup_ratio", "nan"], "--warmup_ratio must be a finite number, got nan"),
    (["train", "--jepa_ratio=-inf"], "--jepa_ratio must be a finite number, got -inf"),
    (["train", "--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    (["train", "--finetune_seed", "4294967296"], "--seed must be in [0, 2**32), got 4294967296"),
    (["train", "--max_steps", "0"], "--max_steps must be -1 (run the epochs) or >= 1, got 0"),
    (["train", "--save_total_limit", "-1"], "--save_total_limit must be >= 0"),
    (["train", "--regular", "--lbd", "0.5"], "--regular trains without JEPA; drop the JEPA options (--lbd)"),
    (["train", "--regular", "--gamma", "2"], "--regular trains without JEPA; drop the JEPA options (--gamma)"),
    (["sweep", "--lbd", "0.1", "nan"], "--lbd must be a finite number, got nan"),
    (["sweep", "--seeds", "1", "-5"], "--seeds must be in [0, 2**32), got -5"),
    (["evaluate", "--model_path", "m", "--temperature", "inf"], "--temperature must be a finite number, got inf"),
    (["evaluate", "--model_path", "m", "--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    (["bench", "--learning_rate", "inf"], "--learning_rate must be a finite number, got inf"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[" ".join(argv) for argv, _ in BAD_FLAGS])
def test_bad_float_and_seed_flags(tmp_path, capsys, argv, message):
    data = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    files = {"train": ["--train_file", str(data), "--output_dir", str(tmp_path / "out")],
             "sweep": ["--train_file", str(data), "--test_file", str(data), "--output_dir", str(tmp_path / "out")],
             "evaluate": ["--test_file", str(data), "--output_file", str(tmp_path / "r.jsonl")],
             "bench": []}[argv[0]]
    run_and_check(capsys, tmp_path, [*argv, *files], message)


def test_latin1_test_file_of_evaluate(tmp_path, capsys, tiny_model_dirs):
    path = latin1_file(tmp_path / "test.jsonl")
    argv = ["evaluate", "--model_path", str(tiny_model_dirs["gpt2"]), "--test_file", str(path),
            "--output_file", str(tmp_path / "results.jsonl")]
    run_and_check(capsys, tmp_path, argv, "test.jsonl:2: not UTF-8 text (byte 0xe9 at column ")


def test_every_step_2_cut_by_max_length_is_refused(tmp_path, capsys, tiny_model_dirs):
    long_step2 = dict(GOOD, messages=[*GOOD["messages"][:2], {"role": "assistant", "content":
                                                              "One.\n\n" + "Two is long. " * 40 + "\n\nThree."}])
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(long_step2)] * 2)
    argv = ["train", "--train_file", str(path), "--model_name", str(tiny_model_dirs["gpt2"]), "--step_jepa",
            "--max_length", "80", "--output_dir", str(tmp_path / "o")]
    run_and_check(capsys, tmp_path, argv, "no example has its JEPA views within --max_length 80 (2 cut, 0 with fewer")


def test_directory_that_is_not_a_model(tmp_path, capsys):
    model = tmp_path / "not_a_model"
    model.mkdir()
    (model / "notes.txt").write_text("weights come later")
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    argv = ["train", "--train_file", str(path), "--model_name", str(model), "--output_dir", str(tmp_path / "o")]
    run_and_check(capsys, tmp_path, argv, f"model directory '{model}' holds no model and tokenizer")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir(tmp_path, capsys, tiny_model_dirs):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    path = write_rows(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    argv = ["train", "--train_file", str(path), "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out)]
    try:
        run_and_check(capsys, tmp_path, argv, f"--output_dir {out}: cannot write there (Permission denied)")
    finally:
        out.chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_on_cuda_without_cuda(tmp_path, capsys):
    path = write_rows(tmp_path / "test.jsonl", [json.dumps(GOOD)])
    argv = ["evaluate", "--model_path", "m", "--test_file", str(path), "--device", "cuda"]
    run_and_check(capsys, tmp_path, argv, "--device cuda: this machine has no CUDA; use --device cpu or auto")
    argv = ["probe", "--model_path", "m", "--test_file", str(path), "--device", "cuda:1"]
    run_and_check(capsys, tmp_path, argv, "--device cuda:1: this machine has no CUDA; use --device cpu or auto")


def test_output_paths_naming_directories(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    test = write_rows(tmp_path / "test.jsonl", [json.dumps(GOOD)])
    run_and_check(capsys, tmp_path, ["evaluate", "--model_path", "m", "--test_file", str(test), "--output_file",
                                     str(taken)], f"--output_file {taken} is a directory; name a file")
    run_and_check(capsys, tmp_path, ["prepare", "--synthetic", "5", "--output", str(taken)],
                  f"{taken} is a directory; --output names a file")
    entry = {"run": "regular_seed1", "config": "regular", "mode": "regular", "seed": 1, "accuracy": 0.5,
             "strict_accuracy": 0.5, "correct": 1, "total_examples": 2, "fixed": {}}
    runs = tmp_path / "runs"
    write_rows(runs / "ledger.jsonl" if runs.mkdir() is None else None, [json.dumps(entry)])
    # Refused before the plots are drawn: nothing new beside the directory.
    run_and_check(capsys, tmp_path, ["report", str(runs), "--output", str(taken)],
                  f"{taken} is a directory; --output names the Markdown file to write")


def test_system_errors_are_one_line(tmp_path, capsys):
    # An output beneath a plain file: the system refuses to make the directory (as it would on a full disk).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    run_and_check(capsys, tmp_path, ["prepare", "--synthetic", "5", "--output", str(blocker / "train.jsonl")],
                  f"error: {blocker}: File exists")

"""End to end: the guide's commands train a few steps on tiny models and leave loadable outputs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stepjepa.cli import parse_config, run_command
from stepjepa.core.steps import split_steps
from stepjepa.models import load_model
from stepjepa.core.examples import RowSettings

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--max_steps", "2", "--batch_size", "4", "--logging_steps", "1", "--debug", "1"]


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("command,argv,message", [
    ("sweep", ["--modes", "regular", "stepjepa"], "--modes: unknown stepjepa; choose from regular, llm_jepa, step_jepa"),
    ("probe", ["--model_path", "m", "--test_file", "t.jsonl", "--mode", "stepjepa"],
     "--mode must be one of step_jepa, llm_jepa, got 'stepjepa'"),
])
def test_a_misspelled_mode_fails_in_one_line_with_status_2(tmp_path, capsys, command, argv, message):
    status = run_command(command, [*argv, "--output_dir" if command == "sweep" else "--output_file", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and err == f"stepjepa {command}: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_misspelled_mode_never_trains_as_another(tiny_model_dirs, tiny_chats):
    from stepjepa.core.examples import pack_chat
    from stepjepa.core.objective import Objective

    with pytest.raises(ValueError, match="--mode must be one of regular, llm_jepa, step_jepa, got 'stepjepa'"):
        Objective(mode="stepjepa")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    with pytest.raises(ValueError, match="unknown mode 'Regular'"):
        pack_chat(tokenizer, tiny_chats[0]["messages"], RowSettings("Regular", [], None, 64))


GUIDE_MODES = {
    "regular": ["--regular", "--lora"],
    "llm_jepa": ["--predictors", "2", "--lbd", "0.5", "--lora"],
    "step_jepa": ["--step_jepa", "--predictors", "2", "--lbd", "0.1", "--lora"],
}


def check_guide_run(out: Path, mode: str) -> None:
    """A two-step guide run left per-step metrics, a loadable model with its predictor tokens, and its adapter."""
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    keys = {"step", "lm_loss", "jepa_loss", "loss", "grad_norm", "learning_rate", "tokens_per_s"}
    collapse = {"view_b_mean_cosine", "view_a_dim_std", "view_b_dim_std", "cosine_gap"}
    if mode == "regular":
        assert set(rows[0]) == keys
        assert all(row["jepa_loss"] is None for row in rows)
    else:
        # The collapse diagnostics follow in windows with JEPA pairs (tests/training/test_trainer.py).
        assert set(rows[0]) == keys | collapse
        assert all(row["jepa_loss"] is not None and row["jepa_loss"] >= 0 for row in rows)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    if mode != "regular":
        assert tokenizer.convert_tokens_to_ids("<|predictor_2|>") != tokenizer.unk_token_id
    assert (out / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["mode"] == mode and summary["global_step"] == 2
    assert summary["provenance"]["precision"] in ("bf16", "fp32") and summary["provenance"]["stepjepa_version"]


# Each guide mode trains its own path; in the fast tier llm_jepa runs here, and the other two modes' runs (with
# --lora) are test_adapter_loads_from_another_working_directory and test_saved_files_... (regular) and
# test_lora_adapter_loads_onto_base_like_the_merged_model (step_jepa, 2 predictors); their guide runs are slow.
@pytest.mark.parametrize("mode", [pytest.param(mode, marks=() if mode == "llm_jepa" else pytest.mark.slow)
                                  for mode in sorted(GUIDE_MODES)])
def test_guide_modes_train_and_save(tiny_model_dirs, chat_file, tmp_path, mode):
    """In process, as the script runs it (the script is `run_command("train", argv)`)."""
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), *GUIDE_MODES[mode], "--model_name", str(tiny_model_dirs["llama"]),
            "--output_dir", str(out), *FAST]
    assert run_command("train", argv, prog="finetune_step_jepa_adapted.py") == 0
    check_guide_run(out, mode)


@pytest.mark.slow
def test_the_guide_script_runs_as_a_program(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "finetune_step_jepa_adapted.py"), "--train_file", str(chat_file),
           *GUIDE_MODES["step_jepa"], "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(out), *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    check_guide_run(out, "step_jepa")


@pytest.mark.parametrize("loss_flag,loss_kind", [([], "cosine"), (["--jepa_l2"], "l2"), (["--jepa_mse"], "mse"),
                                                 (["--infonce"], "infonce")], ids=["none", "l2", "mse", "infonce"])
def test_loss_flags_choose_the_loss(loss_flag, loss_kind):
    """Each loss flag reaches the objective's settings (the training below runs one of them end to end)."""
    assert parse_config("train", ["--train_file", "x.jsonl", "--step_jepa", *loss_flag]).loss_kind == loss_kind


# One training per loss flag; the loss is a function of the views (tests/core/test_losses.py), so the fast tier
# trains with InfoNCE, the loss with its own path (the batch's other pairs as negatives), the other two are slow.
@pytest.mark.parametrize("loss_flag", [pytest.param("--jepa_l2", marks=pytest.mark.slow),
                                       pytest.param("--jepa_mse", marks=pytest.mark.slow), "--infonce"])
def test_loss_flags_train_and_change_weights(tiny_model_dirs, chat_file, tmp_path, loss_flag):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", loss_flag,
            "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out), "--learning_rate", "1e-2", *FAST]
    assert run_command("train", argv) == 0
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2] and all(row["jepa_loss"] is not None for row in rows)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["gpt2"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert not torch.equal(before["transformer.h.0.attn.c_attn.weight"], after["transformer.h.0.attn.c_attn.weight"])


def test_lora_adapter_loads_onto_base_like_the_merged_model(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "2", "--lora", "--lora_rank", "4",
            "--learning_rate", "1e-2", "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(out), *FAST]
    assert run_command("train", argv) == 0
    merged = load_model(str(out)).eval()
    from_adapter = load_model(str(out / "adapter")).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"]).eval()
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, from_adapter(ids).logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(merged(ids).logits[..., : base.config.vocab_size], base(ids).logits, atol=1e-4)


@pytest.mark.slow  # two runs; the draw's repeatability per seed is unit-tested in test_trainer.py
def test_same_seed_same_losses(tiny_model_dirs, chat_file, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["--train_file", str(chat_file), "--predictors", "1", "--jepa_ratio", "0.5", "--seed", "7",
                "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out), *FAST]
        assert run_command("train", argv) == 0
        runs.append([(r["step"], r["lm_loss"], r["jepa_loss"], r["loss"]) for r in metrics(out)])
    assert [row[0] for row in runs[0]] == [1, 2] and runs[0] == runs[1]


def test_debug_7_prints_layout_and_trains_nothing(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "2", "--debug", "7",
            "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(out)]
    assert run_command("train", argv) == 0
    printed = capsys.readouterr().out
    assert "predictor" in printed and "step_2_copy" in printed and "step_1" in printed
    assert not out.exists()


# --step_pairs random builds the rows of every pair (as all does) and draws one per example in the trainer, so in the
# fast tier it covers both; all's own run is slow (its batches' objective: tests/core/test_objective.py).
@pytest.mark.parametrize("step_pairs", [pytest.param("all", marks=pytest.mark.slow), "random"])
def test_every_pair_modes_train_and_count_pairs(tiny_model_dirs, chat_file, tiny_chats, tmp_path, capsys, step_pairs):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--step_pairs", step_pairs,
            "--target_stop_grad", "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out), *FAST]
    assert run_command("train", argv) == 0
    # Pairs counted from the texts: a chat of n blank-line separated steps has n - 1 (none is cut at 512 tokens).
    pairs = sum(len(split_steps(row["messages"][2]["content"])) - 1 for row in tiny_chats)
    line = capsys.readouterr().out
    assert f"20 with JEPA views ({pairs} pairs, " in line and "target stop-gradient" in line
    rows = metrics(out)
    assert [row["step"] for row in rows] == [1, 2] and all(row["jepa_loss"] is not None for row in rows)


@pytest.mark.slow
def test_random_pairs_resume_draws_what_the_straight_run_drew(tiny_model_dirs, chat_file, tmp_path):
    """The pair drawn for an example depends on (seed, step, example) only: steps 3-4 after a resume equal the
    straight run's."""
    common = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--step_pairs", "random",
              "--model_name", str(tiny_model_dirs["gpt2"]), "--learning_rate", "1e-3", "--max_steps", "4",
              "--batch_size", "2", "--logging_steps", "1", "--save_steps", "2", "--debug", "0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_command("train", [*common, "--output_dir", str(straight)]) == 0
    assert run_command("train", [*common, "--output_dir", str(resumed),
                                 "--resume_from_checkpoint", str(straight / "checkpoint-2")]) == 0
    want = [(r["step"], r["lm_loss"], r["jepa_loss"]) for r in metrics(straight)]
    got = [(r["step"], r["lm_loss"], r["jepa_loss"]) for r in metrics(resumed)]
    assert got == want[2:] and [row[0] for row in got] == [3, 4]


def test_debug_7_numbers_every_pair(tiny_model_dirs, chat_file, tmp_path, capsys):
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--step_pairs", "all", "--debug", "7",
            "--model_name", str(tiny_model_dirs["llama"]), "--output_dir", str(tmp_path / "out")]
    assert run_command("train", argv) == 0
    printed = capsys.readouterr().out
    for text in ("predictor p1", "step_2_copy p1", "predictor p2", "step_3_copy p2", "pair p2: view_a index"):
        assert text in printed


def test_overwrite_output_dir_replaces_own_files_only(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--regular", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(out), *FAST]
    assert run_command("train", argv) == 0
    (out / "notes.txt").write_text("mine")
    assert run_command("train", [*argv, "--overwrite_output_dir"]) == 0
    assert [row["step"] for row in metrics(out)] == [1, 2]  # not appended to the first run's rows
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # three runs; the log windows and the last step's log are unit-tested in test_trainer.py
def test_short_run_logs_its_last_step_and_a_partial_window(tiny_model_dirs, chat_file, tmp_path, capsys):
    argv = ["--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--max_steps", "3", "--batch_size", "2", "--debug", "1"]
    every = tmp_path / "every"
    assert run_command("train", [*argv, "--output_dir", str(every), "--logging_steps", "1"]) == 0
    out = tmp_path / "out"
    assert run_command("train", [*argv, "--output_dir", str(out), "--logging_steps", "2"]) == 0
    assert f"metrics in {out / 'metrics.jsonl'}" in capsys.readouterr().out
    step = {row["step"]: row for row in metrics(every)}
    rows = metrics(out)
    assert [row["step"] for row in rows] == [2, 3]
    # Step 2 averages steps 1 and 2; the run's last window is step 3 alone.
    assert rows[0]["lm_loss"] == pytest.approx((step[1]["lm_loss"] + step[2]["lm_loss"]) / 2, abs=2e-6)
    assert rows[1]["lm_loss"] == step[3]["lm_loss"] and rows[1]["jepa_loss"] == step[3]["jepa_loss"]
    assert all(row["grad_norm"] > 0 for row in rows + metrics(every))

    # Shorter than --logging_steps (default 10): one row, the last step.
    short = tmp_path / "short"
    assert run_command("train", [*argv, "--output_dir", str(short)]) == 0
    assert [row["step"] for row in metrics(short)] == [3]


def test_non_finite_loss_stops_the_run_and_saves_no_model(tiny_model_dirs, chat_file, tmp_path, capsys):
    out = tmp_path / "out"
    # A learning rate of 1e30 makes every weight huge after step 1, and step 2's logits overflow.
    argv = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out),
            "--learning_rate", "1e30", "--max_steps", "4", "--save_steps", "1", "--logging_steps", "1",
            "--batch_size", "2", "--debug", "1"]
    assert run_command("train", argv) == 2
    err = capsys.readouterr().err
    assert (f"error: step 2: the LM loss is nan; training stopped, no model saved, the checkpoints are kept "
            f"(last {out / 'checkpoint-1'})") in err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "model.safetensors").exists() and not (out / "train_summary.json").exists()
    # Strict JSON: Python's parser refuses NaN when asked to.
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl")) for line in lines]
    assert [row["step"] for row in rows] == [1]


def test_a_non_finite_loss_is_caught_before_a_checkpoint_between_logs(tiny_model_dirs, chat_file, tmp_path, capsys):
    """The losses are checked when logged (every 10 steps here) and before each save (every step): step 2's NaN
    stops the run at step 2's save, which is not written."""
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--model_name", str(tiny_model_dirs["gpt2"]), "--output_dir", str(out),
            "--learning_rate", "1e30", "--max_steps", "4", "--save_steps", "1", "--logging_steps", "10",
            "--batch_size", "2", "--debug", "1"]
    assert run_command("train", argv) == 2
    assert "error: step 2: the LM loss is nan; training stopped" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not (out / "model.safetensors").exists()


def test_adapter_loads_from_another_working_directory(tiny_model_dirs, chat_file, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    relative = os.path.relpath(tiny_model_dirs["llama"], work)  # as a user types it
    argv = ["--train_file", str(chat_file), "--regular", "--lora", "--lora_rank", "4", "--learning_rate", "1e-2",
            "--model_name", relative, "--output_dir", "out", *FAST]
    assert run_command("train", argv) == 0
    config = json.loads((work / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_model_dirs["llama"]).resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    adapter = AutoPeftModelForCausalLM.from_pretrained(work / "out" / "adapter").merge_and_unload().eval()
    merged = AutoModelForCausalLM.from_pretrained(work / "out").eval()
    ids = torch.tensor([[5, 40, 41, 42, 43]])
    with torch.no_grad():
        torch.testing.assert_close(adapter(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)


def test_saved_files_get_the_mode_of_a_plain_open_under_umask_022(tiny_model_dirs, chat_file, tmp_path):
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--regular", "--lora", "--model_name", str(tiny_model_dirs["gpt2"]),
            "--output_dir", str(out), *FAST]
    old = os.umask(0o022)
    try:
        assert run_command("train", argv) == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert {"model.safetensors", "adapter/adapter_model.safetensors", "checkpoint-2/adapter_model.safetensors",
            "metrics.jsonl", "train_summary.json"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if mode != 0o644} == {}

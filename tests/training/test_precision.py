"""Precision: when bf16 is chosen, and that the bf16 path trains and agrees with float32 to bf16 precision."""

from __future__ import annotations

import pytest
import torch

import stepjepa.precision as precision
from stepjepa.cli import parse_config
from stepjepa.precision import fast_bf16, inference_dtype, use_bf16
from stepjepa.core.examples import RowSettings


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has exactly the given flags."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo="": frozenset(flags))

    return set_flags


def test_auto_follows_the_cpu_flags(cpu_with) -> None:
    cpu_with("sse2", "avx2", "avx512f")
    assert not fast_bf16("cpu") and not use_bf16(False, False, "cpu")
    cpu_with("avx512f", "avx512_bf16")
    assert fast_bf16("cpu") and use_bf16(False, False, "cpu")
    cpu_with("amx_tile", "amx_bf16")
    assert use_bf16(False, False, "cpu")
    assert not fast_bf16("mps")


def test_flags_force_either_way(cpu_with) -> None:
    cpu_with("avx512_bf16")
    assert use_bf16(False, True, "cpu") is False
    cpu_with()
    assert use_bf16(True, False, "cpu") is True


def test_inference_dtype(cpu_with) -> None:
    cpu_with()
    assert inference_dtype("cpu") == torch.float32
    assert inference_dtype("cpu", bf16=True) == torch.bfloat16
    cpu_with("avx512_bf16")
    assert inference_dtype("cpu") == torch.bfloat16
    assert inference_dtype("cpu", no_bf16=True) == torch.float32


def test_cpu_flags_read_the_first_processor(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu amx_bf16\n")
    assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512_bf16"}
    assert precision.cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize("command", ["train", "evaluate", "probe"])
def test_both_flags_refused(command) -> None:
    argv = {"train": ["--train_file", "x.jsonl"], "evaluate": ["--model_path", "m", "--test_file", "t"],
            "probe": ["--model_path", "m", "--test_file", "t"]}[command]
    with pytest.raises(ValueError, match="--bf16 and --no_bf16"):
        parse_config(command, [*argv, "--bf16", "--no_bf16"])
    assert parse_config(command, [*argv, "--bf16"]).bf16


def test_training_arguments_carry_the_choice(cpu_with) -> None:
    from stepjepa.training.training_args import training_arguments

    cpu_with("avx512_bf16")
    assert training_arguments(parse_config("train", ["--train_file", "x"]), has_eval=False).bf16
    assert not training_arguments(parse_config("train", ["--train_file", "x", "--no_bf16"]), has_eval=False).bf16
    cpu_with()
    assert not training_arguments(parse_config("train", ["--train_file", "x"]), has_eval=False).bf16
    assert training_arguments(parse_config("train", ["--train_file", "x", "--bf16"]), has_eval=False).bf16


# --- the bf16 path on tiny models ---------------------------------------------------------------------------------

ALL_MODES = ("regular", "llm_jepa", "step_jepa")


def packed_batch(tokenizer, chats, mode: str, predictor_ids: list[int]):
    from stepjepa.core.examples import pack_chat
    from stepjepa.core.layout import PackedCollator

    rows = [pack_chat(tokenizer, chat["messages"], RowSettings(mode, predictor_ids, None, 256)) for chat in chats]
    return PackedCollator(tokenizer.pad_token_id)(rows)


# Autocast wraps the whole packed pass, so each mode is one path (the loss only changes the function of the views):
# the fast tier runs each mode once, the JEPA modes with the losses most sensitive to rounding (InfoNCE's
# logits are divided by 0.07, L2 takes a square root); the other 9 combinations are in the slow tier.
FAST_BF16_CASES = {("regular", "cosine"), ("llm_jepa", "infonce"), ("step_jepa", "l2")}
BF16_CASES = [pytest.param(mode, loss, marks=() if (mode, loss) in FAST_BF16_CASES else pytest.mark.slow,
                           id=f"{loss}-{mode}")
              for mode in ALL_MODES for loss in ("cosine", "l2", "mse", "infonce")]


@pytest.mark.parametrize("mode,loss", BF16_CASES)
def test_bf16_packed_losses_agree_with_float32(tiny_model_dirs, tiny_chats, mode, loss) -> None:
    """Under CPU bf16 autocast every mode and loss gives finite losses and gradients, equal to float32 within
    bf16's precision (8 mantissa bits, ~0.4% per rounding; a few percent after two layers), yet not bit-equal:
    the autocast really ran in bf16."""
    from stepjepa.core.objective import Objective, compute_objective
    from stepjepa.models import add_predictor_tokens, load_model, load_tokenizer, resize_for_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dirs["llama"]))
    predictor_ids = add_predictor_tokens(tokenizer, 2) if mode != "regular" else []
    model = load_model(str(tiny_model_dirs["llama"]))
    resize_for_tokenizer(model, tokenizer)
    batch = packed_batch(tokenizer, tiny_chats[:6], mode, predictor_ids)
    objective = Objective(mode=mode, loss=loss, lbd=0.5)
    fp32 = compute_objective(model, batch, objective)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = compute_objective(model, batch, objective)
    bf16.loss.backward()
    assert torch.isfinite(bf16.loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(grad).all() for grad in grads)
    assert float(bf16.lm_loss) == pytest.approx(float(fp32.lm_loss), rel=3e-2)
    if mode != "regular":
        assert float(bf16.jepa_loss) == pytest.approx(float(fp32.jepa_loss), rel=5e-2, abs=5e-3)
    assert float(bf16.loss) != float(fp32.loss)


def train_metrics(model_dir, chat_file, out, *flags: str) -> list[dict]:
    import json

    from stepjepa.cli import run_command

    argv = ["--train_file", str(chat_file), "--model_name", str(model_dir), "--output_dir", str(out),
            "--max_steps", "3", "--batch_size", "4", "--logging_steps", "1", "--debug", "0", *flags]
    assert run_command("train", argv) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# Six trainings: Step-JEPA in the fast tier (the one run of --bf16 end to end: the Trainer's autocast, float32
# weights saved), the other two modes in the slow one.
@pytest.mark.parametrize("mode_flags", [
    pytest.param(["--regular"], id="regular", marks=pytest.mark.slow),
    pytest.param(["--predictors", "1"], id="llm_jepa", marks=pytest.mark.slow),
    pytest.param(["--step_jepa", "--predictors", "2"], id="step_jepa"),
])
def test_bf16_training_is_finite_repeatable_and_saves_float32(tiny_model_dirs, chat_file, tmp_path, mode_flags):
    """Every mode trains under --bf16 with finite losses; the same seed gives the same losses step for step;
    the saved model stays float32 (mixed precision keeps float32 weights)."""
    from safetensors.torch import load_file

    model_dir = tiny_model_dirs["llama"]
    first = train_metrics(model_dir, chat_file, tmp_path / "a", "--bf16", *mode_flags)
    again = train_metrics(model_dir, chat_file, tmp_path / "b", "--bf16", *mode_flags)
    assert [r["step"] for r in first] == [1, 2, 3]
    # metrics.jsonl is strict JSON: a NaN or infinite loss is written as null, so a finite loss is a number here.
    regular = "--regular" in mode_flags
    assert all(isinstance(row["lm_loss"], float) for row in first)
    assert all(isinstance(row["jepa_loss"], float) != regular for row in first)
    assert [(r["lm_loss"], r["jepa_loss"]) for r in first] == [(r["lm_loss"], r["jepa_loss"]) for r in again]
    weights = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


@pytest.mark.slow  # two trainings; the flag reaching TrainingArguments.bf16 is test_training_arguments_carry_the_choice
def test_bf16_and_fp32_runs_differ_but_agree_closely(tiny_model_dirs, chat_file, tmp_path) -> None:
    """--bf16 changes the computation (the flag reaches the Trainer) and stays within bf16 precision of float32."""
    model_dir = tiny_model_dirs["llama"]
    bf16 = train_metrics(model_dir, chat_file, tmp_path / "bf16", "--bf16", "--step_jepa")
    fp32 = train_metrics(model_dir, chat_file, tmp_path / "fp32", "--no_bf16", "--step_jepa")
    assert bf16[0]["lm_loss"] != fp32[0]["lm_loss"]
    assert bf16[0]["lm_loss"] == pytest.approx(fp32[0]["lm_loss"], rel=3e-2)

"""The CUDA tier (``pytest -m cuda``; skipped without a CUDA GPU; scripts/gpu_check.sh runs it with the bench).

The bf16 tolerances below are estimates (bf16 keeps 8 bits of mantissa, a relative error of about 4e-3 per
rounding). FlexAttention runs on the tiny Llama of head dimension 16 (``tiny_flex_model_dir``): torch's inductor
compiles no kernel for the head dimension 8 of ``tiny_model_dirs``' Llama, which ``train`` refuses in one line.
"""

from __future__ import annotations

import copy
import json

import pytest
import test_objective
import torch
from test_objective import MAX_LENGTH, batch_chats, grads, oracle, setup

from stepjepa.cli import run_command
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import PackedCollator
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.evaluation.generation import generate_responses

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CUDA = "cuda"


@pytest.fixture
def oracle_on_cuda(monkeypatch):
    """The oracle's separate passes on the GPU, their outputs brought back to the CPU in float32 (differentiably),
    where the oracle computes its losses."""

    def hidden_and_logits(model, ids):
        out = model(torch.tensor([ids], device=CUDA), output_hidden_states=True)
        return out.hidden_states[-1][0].float().cpu(), out.logits[0].float().cpu()

    monkeypatch.setattr(test_objective, "hidden_and_logits", hidden_and_logits)


def to_device(batch: dict) -> dict:
    return {key: value.to(CUDA) for key, value in batch.items()}


def assert_gradients_close(packed: dict, reference: dict, relative: float) -> None:
    """Every gradient within ``relative`` of the reference's norm (elementwise tolerances suit float32 only)."""
    assert packed.keys() == reference.keys() and reference
    for name, grad in reference.items():
        error = float((packed[name].float() - grad.float()).norm())
        assert error <= relative * float(grad.float().norm()) + 1e-6, f"{name}: {error} against {grad.norm()}"


def packed_and_oracle(model, packed_model, tokenizer, chats, mode, predictor_ids, collator, autocast: bool):
    objective = Objective(mode=mode, loss="cosine", lbd=0.7, gamma=1.3)
    batch = to_device(collator([pack_chat(tokenizer, m, RowSettings(mode, predictor_ids, None, MAX_LENGTH)) for m in chats]))
    with torch.autocast(CUDA, dtype=torch.bfloat16, enabled=autocast):
        packed = compute_objective(packed_model, batch, objective)
        packed.loss.backward()
        packed_grads = grads(packed_model)
        loss, lm, view_a, view_b = oracle(model, tokenizer, chats, mode, predictor_ids, "cosine")
        loss.backward()
    return packed, packed_grads, (loss, lm, view_a, view_b), grads(model)


@pytest.mark.parametrize("mode", ["regular", "llm_jepa", "step_jepa"])
def test_oracle_in_bf16_autocast(tiny_model_dir, tiny_chats, oracle_on_cuda, mode):
    """Mixed precision as the Trainer runs it (float32 weights, bf16 autocast), loosened tolerances."""
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 0 if mode == "regular" else 2)
    model.to(CUDA)
    collator = PackedCollator(tokenizer.eos_token_id)
    packed, packed_grads, (loss, lm, view_a, view_b), oracle_grads = packed_and_oracle(
        model, model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, collator, autocast=True)
    tol = dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(packed.lm_loss.float().cpu(), lm, **tol)
    torch.testing.assert_close(packed.loss.float().cpu(), loss, **tol)
    if mode != "regular":
        torch.testing.assert_close(packed.view_a.float().cpu(), view_a, **tol)
        torch.testing.assert_close(packed.view_b.float().cpu(), view_b, **tol)
    assert_gradients_close(packed_grads, oracle_grads, relative=5e-2)


@pytest.mark.parametrize("mode", ["llm_jepa", "step_jepa"])
def test_flex_attention_with_gradients(tiny_flex_model_dir, tiny_chats, oracle_on_cuda, mode):
    """The BlockMask path in float32 against the oracle's separate sdpa passes, gradients included (the CPU
    cannot run FlexAttention's backward)."""
    model, tokenizer, predictor_ids = setup(tiny_flex_model_dir, 2)
    model.to(CUDA)
    flex = copy.deepcopy(model)
    flex.set_attn_implementation("flex_attention")
    collator = PackedCollator(tokenizer.eos_token_id, dense_mask=False)
    packed, packed_grads, (loss, lm, view_a, view_b), oracle_grads = packed_and_oracle(
        model, flex, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, collator, autocast=False)
    tol = dict(rtol=1e-3, atol=1e-4)  # GPU kernels may use TF32 and other reduction orders
    torch.testing.assert_close(packed.lm_loss.cpu(), lm, **tol)
    torch.testing.assert_close(packed.view_a.cpu(), view_a, **tol)
    torch.testing.assert_close(packed.view_b.cpu(), view_b, **tol)
    assert_gradients_close(packed_grads, oracle_grads, relative=1e-3)


def test_batched_generation_matches_one_at_a_time(tiny_model_dirs, tiny_chats):
    """Greedy replies on the GPU: left-padded batches give each prompt's own reply. The random model's logits are
    sharpened (output weights x 50) so that kernel rounding cannot flip a near-tie between two tokens."""
    model, tokenizer, _ = setup(tiny_model_dirs["llama"], 0)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(50)
    model.to(CUDA).eval()
    tokenizer.pad_token = tokenizer.eos_token
    chats = [row["messages"][:2] for row in tiny_chats[:6]]
    batched = generate_responses(model, tokenizer, chats, batch_size=6, max_new_tokens=12)
    single = generate_responses(model, tokenizer, chats, batch_size=1, max_new_tokens=12)
    assert batched == single and any(batched)


@pytest.mark.parametrize("attn", ["sdpa", "flex_attention", "auto"])
def test_short_training_run(tiny_flex_model_dir, chat_file, tmp_path, capsys, attn):
    """Three bf16 steps of Step-JEPA on the GPU with each attention implementation (auto: flex_attention for this
    model), collated in two workers: finite losses, a gradient, a saved model."""
    out = tmp_path / "out"
    argv = ["--train_file", str(chat_file), "--step_jepa", "--predictors", "1", "--model_name",
            str(tiny_flex_model_dir), "--output_dir", str(out), "--attn_implementation", attn, "--bf16",
            "--max_steps", "3", "--batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--dataloader_num_workers", "2", "--debug", "1"]
    assert run_command("train", argv) == 0
    expected = "sdpa (asked for)" if attn == "sdpa" else "flex_attention (auto: CUDA" if attn == "auto" \
        else "flex_attention (asked for)"
    assert f"attention {expected}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row["jepa_loss"] is not None and row["grad_norm"] > 0 for row in rows)
    assert (out / "model.safetensors").is_file()


def test_auto_takes_sdpa_for_head_dim_8_and_explicit_flex_is_refused(tiny_model_dirs, chat_file, tmp_path, capsys):
    """The head dimension 8 Llama: auto trains with sdpa and says why; an explicit flex_attention is one line,
    exit 2, before anything is written (it would otherwise stop in inductor with a traceback)."""
    from stepjepa.cli import main

    common = ["train", "--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["llama"]),
              "--max_steps", "1", "--batch_size", "2", "--debug", "1"]
    assert main([*common, "--output_dir", str(tmp_path / "auto")]) == 0
    assert "attention sdpa (auto: LlamaForCausalLM's head dimension 8 is below 16" in capsys.readouterr().out
    refused = tmp_path / "refused"
    assert main([*common, "--output_dir", str(refused), "--attn_implementation", "flex_attention"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "head dimension 8 is below 16" in err[0], captured.err
    assert not refused.exists()


def test_a_cuda_step_reads_nothing_back(tiny_flex_model_dir, tiny_chats):
    """The batch train builds on CUDA for sdpa (no host mask, host counts, moved non-blocking): forward and
    backward without a scalar read (each one would wait for the GPU's queue)."""
    from stepjepa.core.objective import HostCountingCollator

    model, tokenizer, predictor_ids = setup(tiny_flex_model_dir, 2)
    model.to(CUDA)
    rows = [pack_chat(tokenizer, m, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH)) for m in batch_chats(tiny_chats)]
    batch = HostCountingCollator(PackedCollator(tokenizer.eos_token_id, dense_mask=False))(rows)
    batch = {k: v.pin_memory().to(CUDA, non_blocking=True) if isinstance(v, torch.Tensor) else v
             for k, v in batch.items()}
    objective = Objective(mode="step_jepa")
    compute_objective(model, batch, objective).loss.backward()  # warm-up: kernel choice, allocation
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        compute_objective(model, batch, objective).loss.backward()
    reads = {event.key: event.count for event in profile.key_averages()
             if event.key in ("aten::_local_scalar_dense", "aten::nonzero", "aten::item")}
    assert reads == {}, reads

"""Which attention implementation a run uses and how its batches are shaped for it, decided by pure functions of
the machine and the model's config (the CUDA branches run here with ``cuda_available`` given); the refusal of an
explicit flex_attention the model cannot run, through the CLI; and a step that reads nothing back from the device
when its batch carries the collator's host counts."""

from __future__ import annotations

import pytest
import torch
from test_objective import MAX_LENGTH, batch_chats, setup

from stepjepa.core.attention import (
    FLEX_BLOCK_SIZE,
    FLEX_MIN_HEAD_DIM,
    batch_width_multiple,
    choose_attention,
    host_builds_dense_mask,
    model_attention_mask,
)
from stepjepa.core.errors import UsageError
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import PackedCollator
from stepjepa.core.objective import HostCountingCollator, Objective, add_host_counts, compute_objective
from stepjepa.models import attention_facts

# --- the choice: every branch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda,supports_flex,head_dim,expected,because", [
    (True, True, 64, "flex_attention", "supports FlexAttention, head dimension 64 >= 16"),
    (True, True, 16, "flex_attention", "head dimension 16 >= 16"),
    (True, True, 8, "sdpa", "head dimension 8 is below 16"),
    (True, True, None, "sdpa", "head dimension None is below 16"),
    (True, False, 64, "sdpa", "has no FlexAttention support"),
    (False, True, 64, "sdpa", "no CUDA GPU"),
    (False, False, 8, "sdpa", "no CUDA GPU"),
])
def test_auto_takes_flex_only_on_cuda_with_support_and_head_dim_16(cuda, supports_flex, head_dim, expected,
                                                                    because):
    choice = choose_attention("auto", cuda, supports_flex, head_dim, "LlamaForCausalLM")
    assert choice.implementation == expected
    assert choice.reason.startswith("auto: ") and because in choice.reason


@pytest.mark.parametrize("requested", ["sdpa", "eager"])
@pytest.mark.parametrize("cuda", [True, False])
def test_an_explicit_dense_implementation_is_kept(requested, cuda):
    assert choose_attention(requested, cuda, False, 8).implementation == requested


def test_an_explicit_flex_that_can_run_is_kept():
    assert choose_attention("flex_attention", True, True, FLEX_MIN_HEAD_DIM).implementation == "flex_attention"


@pytest.mark.parametrize("cuda,supports_flex,head_dim,message", [
    (False, True, 64, "needs a CUDA GPU"),
    (True, False, 64, "GPT2LMHeadModel has no FlexAttention support"),
    (True, True, 8, "head dimension 8 is below 16"),
])
def test_an_explicit_flex_that_cannot_run_is_one_line(cuda, supports_flex, head_dim, message):
    with pytest.raises(UsageError, match=message) as raised:
        choose_attention("flex_attention", cuda, supports_flex, head_dim, "GPT2LMHeadModel")
    assert "\n" not in str(raised.value)


def test_an_unknown_implementation_is_refused():
    with pytest.raises(UsageError, match="--attn_implementation must be one of auto, sdpa"):
        choose_attention("flash", True, True, 64)


def test_the_facts_come_from_the_config(tiny_model_dirs, tiny_flex_model_dir):
    """Llama 32 wide with 4 heads: head_dim 8; the flex fixture 64 wide with 4 heads: 16; GPT-2: no flex."""
    assert attention_facts(str(tiny_model_dirs["llama"])) == ("LlamaForCausalLM", True, 8)
    assert attention_facts(str(tiny_flex_model_dir)) == ("LlamaForCausalLM", True, 16)
    assert attention_facts(str(tiny_model_dirs["gpt2"])) == ("GPT2LMHeadModel", False, 8)
    assert choose_attention("auto", True, *attention_facts(str(tiny_flex_model_dir))[1:]).implementation == \
        "flex_attention"


@pytest.mark.parametrize("implementation,cuda,compiled,host_mask,multiple", [
    ("sdpa", False, False, True, None),
    ("eager", False, False, True, None),
    ("sdpa", True, False, False, None),  # CUDA: the mask is built on the device, no padding without compilation
    ("sdpa", True, True, False, FLEX_BLOCK_SIZE),
    ("flex_attention", True, False, False, FLEX_BLOCK_SIZE),
    ("flex_attention", False, False, False, None),
])
def test_batch_shape_decisions(implementation, cuda, compiled, host_mask, multiple):
    assert host_builds_dense_mask(implementation, cuda) is host_mask
    assert batch_width_multiple(implementation, cuda, compiled) == multiple
    assert FLEX_BLOCK_SIZE == 128


# --- batches for CUDA, built and run here --------------------------------------------------------------------------


def rows_of(tokenizer, chats, mode, predictor_ids):
    return [pack_chat(tokenizer, m, RowSettings(mode, predictor_ids, None, MAX_LENGTH)) for m in chats]


@pytest.mark.parametrize("mode", ["regular", "llm_jepa", "step_jepa"])
def test_a_padded_batch_without_host_mask_gives_the_same_losses(tiny_model_dirs, tiny_chats, mode):
    """The CUDA batch (width padded to a multiple of 128, mask built where the batch lies, host counts) against
    the CPU batch: the same LM loss, JEPA loss and embeddings; the padding columns see only themselves."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 0 if mode == "regular" else 2)
    rows = rows_of(tokenizer, batch_chats(tiny_chats), mode, predictor_ids)
    plain = PackedCollator(tokenizer.eos_token_id)(rows)
    cuda_like = HostCountingCollator(PackedCollator(tokenizer.eos_token_id, dense_mask=False,
                                                    pad_to_multiple_of=FLEX_BLOCK_SIZE))(rows)
    width = plain["input_ids"].shape[1]
    assert "attention_mask" not in cuda_like
    assert cuda_like["input_ids"].shape[1] == -(-width // 128) * 128 > width
    extra = slice(width, None)
    count, total = cuda_like["input_ids"].shape  # LLM-JEPA's views may have rows of their own
    assert torch.equal(cuda_like["block_start"][:, extra], torch.arange(width, total).expand(count, -1))
    # (each padding column starts its own block: it sees itself only)
    assert bool((cuda_like["labels"][:, extra] == -100).all())
    objective = Objective(mode=mode, loss="cosine", lbd=0.7, gamma=1.3)
    with torch.no_grad():
        want = compute_objective(model, plain, objective)
        got = compute_objective(model, cuda_like, objective)
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(got.lm_loss, want.lm_loss)
    assert got.lm_tokens == want.lm_tokens
    if mode != "regular":
        torch.testing.assert_close(got.view_a, want.view_a)
        torch.testing.assert_close(got.view_b, want.view_b)


def test_the_mask_built_in_the_step_is_the_collators(tiny_model_dirs, tiny_chats):
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 2)
    rows = rows_of(tokenizer, batch_chats(tiny_chats), "step_jepa", predictor_ids)
    host = PackedCollator(tokenizer.eos_token_id)(rows)
    columns = PackedCollator(tokenizer.eos_token_id, dense_mask=False)(rows)
    built = model_attention_mask(columns, torch.float32, "sdpa")
    assert torch.equal(built, host["attention_mask"])
    # Independently: a key past the query is never allowed; every token sees itself.
    length = built.shape[-1]
    above = torch.ones(length, length, dtype=torch.bool).triu(1)
    assert bool((built[:, 0][:, above] == float("-inf")).all())
    assert bool((built[:, 0].diagonal(dim1=1, dim2=2) == 0).all())


def test_host_counts_are_the_batchs_counts(tiny_model_dirs, tiny_chats):
    """Counted here by hand from the rows: labelled tokens, examples with a pair, and the LM window."""
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    rows = rows_of(tokenizer, batch_chats(tiny_chats), "step_jepa", predictor_ids)
    batch = add_host_counts(PackedCollator(tokenizer.eos_token_id)(rows))
    labelled = [[i for i, label in enumerate(row["labels"]) if label != -100] for row in rows]
    assert batch["lm_tokens"] == sum(len(columns) for columns in labelled)
    assert batch["pair_examples"] == sum(bool(row["view_pairs"]) for row in rows)
    assert (batch["lm_lo"], batch["lm_hi"]) == (min(c[0] for c in labelled) - 1, max(c[-1] for c in labelled))
    for key in ("conversation_rows", "conversation_width", "num_tokens", "lm_tokens", "lm_lo", "lm_hi"):
        assert type(batch[key]) is int, key


def scalar_reads(step) -> int:
    """How many times ``step`` reads a tensor's value back to the host (``aten::_local_scalar_dense``: what
    ``.item()``, ``int(t)`` and ``bool(t)`` run; on CUDA each waits for the GPU)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    return sum(event.count for event in profile.key_averages()
               if event.key in ("aten::_local_scalar_dense", "aten::nonzero", "aten::item"))


@pytest.mark.parametrize("mode", ["regular", "llm_jepa", "step_jepa"])
def test_a_step_with_host_counts_reads_nothing_back(tiny_model_dirs, tiny_chats, mode):
    """Forward and backward of the CUDA-shaped batch (no host mask, host counts): no scalar read; the same batch
    without its host counts reads its LM window and token count (the check can fail)."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 0 if mode == "regular" else 2)
    rows = rows_of(tokenizer, batch_chats(tiny_chats), mode, predictor_ids)
    collator = PackedCollator(tokenizer.eos_token_id, dense_mask=False)
    objective = Objective(mode=mode)

    def step(batch):
        return lambda: compute_objective(model, batch, objective).loss.backward()

    assert scalar_reads(step(HostCountingCollator(collator)(rows))) == 0
    assert scalar_reads(step(collator(rows))) > 0


# --- the refusal and the start line, through the CLI -------------------------------------------------------------


def train_argv(model_dir, chat_file, out, *extra):
    return ["train", "--train_file", str(chat_file), "--step_jepa", "--model_name", str(model_dir),
            "--output_dir", str(out), "--max_steps", "1", "--batch_size", "2", *extra]


@pytest.mark.parametrize("family,message", [("llama", "head dimension 8 is below 16"),
                                            ("gpt2", "GPT2LMHeadModel has no FlexAttention support")])
def test_flex_the_model_cannot_run_is_one_line_exit_2_nothing_written(tiny_model_dirs, chat_file, tmp_path,
                                                                       capsys, monkeypatch, family, message):
    """As on a CUDA machine (torch reports a GPU): refused from the config, before data or weights load."""
    from stepjepa.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "out"
    assert main(train_argv(tiny_model_dirs[family], chat_file, out, "--attn_implementation", "flex_attention",
                           "--debug", "0")) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "flex_attention cannot run here" in err[0], captured.err
    assert captured.out == "" and not out.exists()


def test_the_start_line_says_which_attention_and_why(tiny_model_dirs, chat_file, tmp_path, capsys):
    from stepjepa.cli import main

    assert main(train_argv(tiny_model_dirs["gpt2"], chat_file, tmp_path / "out", "--debug", "1")) == 0
    printed = capsys.readouterr().out
    assert "attention sdpa (auto: no CUDA GPU)" in printed

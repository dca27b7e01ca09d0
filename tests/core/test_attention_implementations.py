"""Every attention implementation that runs here against the oracle. eager: the full oracle check (sdpa is
tests/test_objective.py's). flex_attention: no dense mask in the batch, a BlockMask built from block_start and context_end, and
the oracle's LM loss and embeddings. On the CPU FlexAttention has no backward (torch 2.13), so here the check is
forward only; the CUDA tier (tests/test_gpu.py) checks the gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from test_objective import MAX_LENGTH, assert_matches_oracle, batch_chats, check_against_oracle, oracle, setup

from stepjepa.core.attention import flex_block_mask, model_attention_mask, uses_dense_mask
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import PackedCollator, allowed_attention, conversation_only
from stepjepa.core.objective import Objective, compute_objective


@pytest.fixture
def eager_flex(monkeypatch):
    """transformers compiles flex_attention on first use (about 100 s on this CPU); eager computes the same."""
    import transformers.integrations.flex_attention as integration
    from torch.nn.attention.flex_attention import flex_attention

    def eager(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(integration, "compile_friendly_flex_attention", eager)


@pytest.mark.parametrize("mode", ["regular", "llm_jepa", "step_jepa"])
def test_eager_attention_matches_the_oracle(tiny_model_dir, tiny_chats, mode):
    """The additive mask under eager attention (a boolean 4D mask would be wrong there), gradients included."""
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 0 if mode == "regular" else 2)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    check_against_oracle(model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, "cosine")


def packed_rows(tokenizer, chats, mode, predictor_ids):
    return [pack_chat(tokenizer, m, RowSettings(mode, predictor_ids, None, MAX_LENGTH)) for m in chats]


def test_flex_batch_holds_no_square_tensor(tiny_model_dirs, tiny_chats):
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 2)
    rows = packed_rows(tokenizer, batch_chats(tiny_chats), "step_jepa", predictor_ids)
    batch = PackedCollator(tokenizer.eos_token_id, dense_mask=False)(rows)
    rows_, length = batch["input_ids"].shape
    assert "attention_mask" not in batch
    assert all(value.dim() <= 2 and length * length not in value.shape[-2:] for value in batch.values())
    assert batch["block_start"].shape == batch["context_end"].shape == (rows_, length)
    assert "attention_mask" not in conversation_only(batch)
    assert not uses_dense_mask("flex_attention") and uses_dense_mask("sdpa") and uses_dense_mask("eager")


def test_block_mask_allows_what_the_dense_rule_allows(tiny_model_dirs, tiny_chats):
    """Evaluated token by token, the BlockMask's mask_mod is the dense mask's rule, padding included."""
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    rows = packed_rows(tokenizer, batch_chats(tiny_chats), "llm_jepa", predictor_ids)
    batch = PackedCollator(tokenizer.eos_token_id, dense_mask=False)(rows)
    block_mask = flex_block_mask(batch["block_start"], batch["context_end"])
    rows_, length = batch["input_ids"].shape
    assert block_mask.shape == (rows_, 1, length, length)
    b, q, k = torch.meshgrid(torch.arange(rows_), torch.arange(length), torch.arange(length), indexing="ij")
    from_mask_mod = block_mask.mask_mod(b, torch.zeros_like(b), q, k)
    assert torch.equal(from_mask_mod, allowed_attention(batch["block_start"], batch["context_end"]))
    assert isinstance(model_attention_mask(batch, torch.float32), type(block_mask))


# The fast tier: each mode once, the JEPA modes with predictors (the richer blocks); K 0 is one more case of the
# same mask rule (its oracle cases in test_objective.py run in the fast tier under sdpa).
@pytest.mark.parametrize("mode,num_predictors", [("regular", 0), pytest.param("llm_jepa", 0, marks=pytest.mark.slow),
                                                 ("llm_jepa", 2), pytest.param("step_jepa", 0, marks=pytest.mark.slow),
                                                 ("step_jepa", 2)])
def test_flex_forward_matches_the_oracle(tiny_model_dirs, tiny_chats, eager_flex, mode, num_predictors):
    """Llama (GPT-2 has no flex_attention in transformers): the packed flex pass against the oracle's separate
    sdpa passes, on the LM loss and both embeddings."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], num_predictors)
    flex = copy.deepcopy(model)
    flex.set_attn_implementation("flex_attention")
    chats = batch_chats(tiny_chats)
    batch = PackedCollator(tokenizer.eos_token_id, dense_mask=False)(packed_rows(tokenizer, chats, mode,
                                                                                  predictor_ids))
    objective = Objective(mode=mode, loss="cosine", lbd=0.7, gamma=1.3)
    with torch.no_grad():
        packed = compute_objective(flex, batch, objective)
        expected = oracle(model, tokenizer, chats, mode, predictor_ids, "cosine")
    assert_matches_oracle(packed, expected, mode)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_training_with_flex_on_the_cpu_is_refused_in_one_line(tiny_model_dirs, chat_file, tmp_path, capsys):
    from stepjepa.cli import main

    out = tmp_path / "out"
    argv = ["train", "--train_file", str(chat_file), "--step_jepa", "--model_name", str(tiny_model_dirs["llama"]),
            "--output_dir", str(out), "--attn_implementation", "flex_attention", "--max_steps", "1", "--debug", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flex_attention needs a CUDA GPU" in err[0]
    assert not out.exists()

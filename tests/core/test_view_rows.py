"""LLM-JEPA's views in rows of their own (PackedCollator view_rows): the oracle's numbers, each view seeing only
itself, and the cost rule that chooses between them and appending."""

from __future__ import annotations

import pytest
import torch
from test_objective import MAX_LENGTH, batch_chats, grads, oracle, setup

from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import (
    PackedCollator,
    allowed_attention,
    conversation_only,
    draw_one_pair_per_row,
    select_pairs,
)
from stepjepa.core.losses import JEPA_LOSSES
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.core.view_rows import isolated_blocks, layout_cost


def llm_rows(tokenizer, chats, predictor_ids):
    return [pack_chat(tokenizer, m, RowSettings("llm_jepa", predictor_ids, None, MAX_LENGTH)) for m in chats]


# The view-row layout depends on the family (its tokenizer) and the predictors, not on the loss, a function of the
# views (tests/core/test_losses.py): the fast tier runs each family with and without predictors, InfoNCE (the
# batch's other pairs as negatives) and L2 among them; the other 12 cases are slow.
FAST_VIEW_ROW_CASES = {("gpt2", "infonce", 0), ("gpt2", "l2", 2), ("llama", "l2", 0), ("llama", "infonce", 2)}
VIEW_ROW_CASES = [
    pytest.param(family, loss, k, marks=() if (family, loss, k) in FAST_VIEW_ROW_CASES else pytest.mark.slow,
                 id=f"{family}-{loss}-{k}")
    for family in ("gpt2", "llama") for loss in JEPA_LOSSES for k in (0, 2)
]


@pytest.mark.parametrize("family,loss_kind,num_predictors", VIEW_ROW_CASES)
def test_view_rows_match_the_oracle(tiny_model_dirs, tiny_chats, family, loss_kind, num_predictors):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], num_predictors)
    chats = batch_chats(tiny_chats)
    batch = PackedCollator(tokenizer.eos_token_id, view_rows="always")(llm_rows(tokenizer, chats, predictor_ids))
    assert len(batch["input_ids"]) > len(chats) and (batch["pair_a_row"] >= len(chats)).all()
    objective = Objective(mode="llm_jepa", loss=loss_kind, lbd=0.7, gamma=1.3)
    packed = compute_objective(model, batch, objective)
    packed.loss.backward()
    packed_grads = grads(model)
    loss, lm, view_a, view_b = oracle(model, tokenizer, chats, "llm_jepa", predictor_ids, loss_kind)
    loss.backward()
    oracle_grads = grads(model)
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed.lm_loss, lm, **tol)
    torch.testing.assert_close(packed.view_a, view_a, **tol)
    torch.testing.assert_close(packed.view_b, view_b, **tol)
    torch.testing.assert_close(packed.loss, loss, **tol)
    assert packed_grads.keys() == oracle_grads.keys() and packed_grads
    for name in oracle_grads:
        torch.testing.assert_close(packed_grads[name], oracle_grads[name], **tol, msg=lambda m: f"{name}: {m}")


def test_each_view_row_block_sees_only_itself(tiny_model_dirs, tiny_chats):
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    chats = batch_chats(tiny_chats)
    rows = llm_rows(tokenizer, chats, predictor_ids)
    batch = PackedCollator(tokenizer.eos_token_id, view_rows="always")(rows)
    allowed = allowed_attention(batch["block_start"], batch["context_end"])
    width = batch["input_ids"].shape[1]
    assert int(batch["conversation_width"]) == max(row["conversation_length"] for row in rows)
    placed = 0
    for r in range(len(chats), len(batch["input_ids"])):
        assert (batch["labels"][r] == -100).all() and (batch["context_end"][r] == 0).all()
        starts = batch["block_start"][r]
        for q in range(width):
            # A token sees its block's columns up to itself, nothing else; a block's positions count from 0.
            expected = torch.zeros(width, dtype=torch.bool)
            expected[starts[q] : q + 1] = True
            assert torch.equal(allowed[r, q], expected)
        real = batch["input_ids"][r] != tokenizer.eos_token_id
        placed += int(real.sum())
        for start in starts[real].unique().tolist():
            block = (starts == start) & real
            assert batch["position_ids"][r][block].tolist() == list(range(int(block.sum())))
    # Every view token is placed once (their pad-free length; the fixture's views hold no end-of-turn id as pad).
    assert placed <= sum(len(row["input_ids"]) - row["conversation_length"] for row in rows)
    lm_only = conversation_only(batch)
    assert lm_only["input_ids"].shape == (len(chats), int(batch["conversation_width"]))
    with pytest.raises(ValueError, match="select_pairs"):
        select_pairs(batch, torch.ones(len(batch["pair_row"]), dtype=torch.bool), 0)


def test_cost_rule_by_hand():
    """layout_cost = rows x width x (1 + width / 1000). Four conversations of 300 with 280-token views appended:
    4 x 580 x 1.58 = 3665.6; in their own 4 rows of 300: 8 x 300 x 1.3 = 3120, cheaper. With 80-token views
    appended (4 x 380 x 1.38 = 2097.6) the same own-row layout costs more."""
    assert layout_cost(4, 580) == pytest.approx(3665.6)
    assert layout_cost(8, 300) == pytest.approx(3120.0)
    assert layout_cost(4, 380) == pytest.approx(2097.6)


def test_auto_chooses_the_cheaper_layout(tiny_model_dirs, tiny_chats):
    """The fixture's conversations are 103, 103, 103 and 106 tokens, their views 27 + 62 (27 + 65 for the last).
    Appended after the longest conversation: 4 rows x (106 + 92) x 1.198 = 948.82; own rows: each long view with
    a short one fits 106 columns, 4 view rows, 8 x 106 x 1.106 = 937.89: auto takes the rows. Filling the
    padding, longest first after the row ending first: 65 -> row 0 (168), the 62s -> rows 1, 2 (165) and 3 (168),
    the 27s -> rows 1, 2 (192), 0 and 3 (195): 4 x 195 x 1.195 = 932.09, cheaper still: auto fills. Step-JEPA's
    predictors see the conversation and stay in its row."""
    _, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 0)
    chats = batch_chats(tiny_chats)
    rows = llm_rows(tokenizer, chats, predictor_ids)
    assert [row["conversation_length"] for row in rows] == [103, 103, 103, 106]
    assert [[end - start for start, end in isolated_blocks(row)] for row in rows] == [[27, 62]] * 3 + [[27, 65]]
    assert layout_cost(4, 198) == pytest.approx(948.82, abs=0.01)
    assert layout_cost(8, 106) == pytest.approx(937.89, abs=0.01)
    assert layout_cost(4, 195) == pytest.approx(932.09, abs=0.01)
    assert PackedCollator(tokenizer.eos_token_id)(rows)["input_ids"].shape == (4, 195)
    assert PackedCollator(tokenizer.eos_token_id, fill_padding=False)(rows)["input_ids"].shape == (8, 106)
    unfilled = PackedCollator(tokenizer.eos_token_id, view_rows="never", fill_padding=False)
    assert unfilled(rows)["input_ids"].shape == (4, 198)
    # A long system prompt lengthens the conversations, not the views: then appending is the cheaper layout.
    long_system = [[{**m, "content": m["content"] * 40} if m["role"] == "system" else m for m in c] for c in chats]
    rows = llm_rows(tokenizer, long_system, predictor_ids)
    width = max(row["conversation_length"] for row in rows)
    assert width > 250
    auto = PackedCollator(tokenizer.eos_token_id, fill_padding=False)(rows)
    assert auto["input_ids"].shape == (4, width + 92)
    assert layout_cost(4, width + 92) < layout_cost(6, width)  # the 8 views fill 2 rows of their own
    step_rows = [pack_chat(tokenizer, m, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH)) for m in chats]
    assert all(isolated_blocks(row) is None for row in step_rows if row["view_pairs"])  # K = 0: view_a in the chat
    step = PackedCollator(tokenizer.eos_token_id, view_rows="always")(step_rows)
    assert len(step["input_ids"]) == len(chats)
    assert torch.equal(step["pair_a_row"], step["pair_row"]) and torch.equal(step["pair_b_row"], step["pair_row"])
    kept = select_pairs(step, draw_one_pair_per_row(step, 0, 0), 0) if "example_index" in step else step
    assert torch.equal(kept["pair_a_row"], kept["pair_row"])

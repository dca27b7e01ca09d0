"""The multi-pass computation: each view's own sequence read off a packed row, and the packed pass's losses."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import PackedCollator, pack_step_jepa
from stepjepa.core.multipass import multipass_batch, multipass_objective, view_sequence
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.core.tokenization import EncodedChat
from stepjepa.models import add_predictor_tokens, load_tokenizer, resize_for_tokenizer

MAX_LENGTH = 256


def three_step_chat() -> EncodedChat:
    """Ids 10..19: a prompt of 3 tokens, steps [3, 5), [5, 8), [8, 10)."""
    ids = list(range(10, 20))
    return EncodedChat(ids, [-100] * 3 + ids[3:], 3, [(3, 5), (5, 8), (8, 10)], False)


def test_view_sequences_of_a_step_jepa_row_by_hand():
    """Pairs 1 and 2 with predictors 98, 99: the row is 10..19, then [98 99][15 16 17], then [98 99][18 19]."""
    row = pack_step_jepa(three_step_chat(), [98, 99], pairs=(1, 2))
    (a1, b1), (a2, b2) = row["view_pairs"]
    assert (a1, b1, a2, b2) == (11, 14, 16, 18)
    # Predictors see the conversation up to their step: system..step 1 (5 tokens), then themselves.
    assert view_sequence(row, a1) == ([10, 11, 12, 13, 14, 98, 99], 6)
    assert view_sequence(row, a2) == ([10, 11, 12, 13, 14, 15, 16, 17, 98, 99], 9)
    # A step's copy sees only itself.
    assert view_sequence(row, b1) == ([15, 16, 17], 2)
    assert view_sequence(row, b2) == ([18, 19], 1)


def test_multipass_batch_pads_each_pass_to_its_own_longest():
    chat = three_step_chat()
    short = EncodedChat(chat.input_ids[:8], chat.labels[:8], 3, chat.step_spans[:2], True)
    rows = [pack_step_jepa(chat, [98], pairs=(1, 2)), pack_step_jepa(short, [98], pairs=(1,))]
    batch = multipass_batch(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [list(range(10, 20)), list(range(10, 18)) + [0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 10, [1] * 8 + [0, 0]]
    assert batch["labels"][1, 8:].tolist() == [-100, -100] and int(batch["num_tokens"]) == 18
    assert batch["view_rows"].tolist() == [0, 0, 1]
    assert batch["view_a_ids"].tolist() == [[10, 11, 12, 13, 14, 98, 0, 0, 0],
                                            [10, 11, 12, 13, 14, 15, 16, 17, 98],
                                            [10, 11, 12, 13, 14, 98, 0, 0, 0]]
    assert batch["view_a_index"].tolist() == [5, 8, 5]
    assert batch["view_b_ids"].tolist() == [[15, 16, 17], [18, 19, 0], [15, 16, 17]]
    assert batch["view_b_index"].tolist() == [2, 1, 2]


def test_identity_predictor_reads_view_a_from_the_conversation():
    batch = multipass_batch([pack_step_jepa(three_step_chat(), [], pairs=(1, 2))], pad_token_id=0)
    assert "view_a_ids" not in batch
    assert batch["view_a_index"].tolist() == [4, 7]  # the last token of steps 1 and 2


def tiny_setup(model_dir, num_predictors):
    tokenizer = load_tokenizer(str(model_dir))
    predictor_ids = add_predictor_tokens(tokenizer, num_predictors) if num_predictors else []
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    resize_for_tokenizer(model, tokenizer)
    return model, tokenizer, predictor_ids


def assert_same_losses(model, rows, pad, objective):
    packed = compute_objective(model, PackedCollator(pad)(rows), objective)
    straightforward = multipass_objective(model, multipass_batch(rows, pad), objective)
    tol = dict(rtol=1e-4, atol=1e-5)
    for name in ("loss", "lm_loss", "jepa_loss", "view_a", "view_b"):
        torch.testing.assert_close(getattr(straightforward, name), getattr(packed, name), **tol, msg=name)


@pytest.mark.parametrize("mode", ["step_jepa", "llm_jepa"])
@pytest.mark.parametrize("num_predictors", [0, 2])
def test_multipass_computes_the_packed_losses(tiny_model_dir, tiny_chats, mode, num_predictors):
    model, tokenizer, predictor_ids = tiny_setup(tiny_model_dir, num_predictors)
    rows = [pack_chat(tokenizer, row["messages"], RowSettings(mode, predictor_ids, None, MAX_LENGTH)) for row in tiny_chats[:4]]
    assert_same_losses(model, rows, tokenizer.pad_token_id, Objective(mode=mode, lbd=0.7, gamma=1.3))


@pytest.mark.parametrize("num_predictors", [0, 2])
def test_all_pairs_multipass_computes_the_packed_losses(tiny_model_dir, tiny_chats, num_predictors):
    model, tokenizer, predictor_ids = tiny_setup(tiny_model_dir, num_predictors)
    rows = [pack_chat(tokenizer, row["messages"], RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH, "all"))
            for row in tiny_chats[:4]]
    assert sum(len(row["view_pairs"]) for row in rows) > len(rows)  # several pairs per chat
    assert_same_losses(model, rows, tokenizer.pad_token_id, Objective(mode="step_jepa", lbd=0.7, gamma=1.3))

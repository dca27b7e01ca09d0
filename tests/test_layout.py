"""Layout, positions and masks on small cases checked by hand."""

from __future__ import annotations

import torch

from stepjepa.layout import (
    NO_VIEW,
    PackedCollator,
    allowed_attention,
    conversation_only,
    pack_llm_jepa,
    pack_regular,
    pack_step_jepa,
)
from stepjepa.tokenization import EncodedChat, EncodedView

# Six conversation tokens: prompt 10 11, step 1 = 12 13, step 2 = 14 15.
CHAT = EncodedChat([10, 11, 12, 13, 14, 15], [-100, -100, 12, 13, 14, 15], 2, [(2, 4), (4, 6)], False)


def picture(allowed: torch.Tensor) -> list[str]:
    return ["".join("#" if x else "." for x in row) for row in allowed.tolist()]


def test_step_jepa_row_with_one_predictor():
    row = pack_step_jepa(CHAT, [99])
    assert row["input_ids"] == [10, 11, 12, 13, 14, 15, 99, 14, 15]
    assert row["labels"] == [-100, -100, 12, 13, 14, 15, -100, -100, -100]
    # The predictor continues step 1 (last position 3); the step 2 copy starts afresh.
    assert row["position_ids"] == [0, 1, 2, 3, 4, 5, 4, 0, 1]
    assert row["view_a_index"] == 6 and row["view_b_index"] == 8
    allowed = allowed_attention(torch.tensor([row["block_start"]]), torch.tensor([row["context_end"]]))[0]
    assert picture(allowed) == [
        "#........",
        "##.......",
        "###......",
        "####.....",
        "#####....",
        "######...",
        "####..#..",  # predictor: system..step 1, then itself
        ".......#.",  # step 2 copy: only itself, causally
        ".......##",
    ]


def test_step_jepa_identity_predictor_uses_step1_last_token():
    row = pack_step_jepa(CHAT, [])
    assert row["input_ids"] == [10, 11, 12, 13, 14, 15, 14, 15]
    assert row["view_a_index"] == 3 and row["view_b_index"] == 7


def test_step_jepa_with_one_step_is_lm_only():
    chat = EncodedChat([10, 11, 12, 13], [-100, -100, 12, 13], 2, [(2, 4)], False)
    row = pack_step_jepa(chat, [99, 98])
    assert row["input_ids"] == [10, 11, 12, 13]
    assert row["view_a_index"] == NO_VIEW == row["view_b_index"]


def test_llm_jepa_views_are_isolated_and_start_at_zero():
    user = EncodedView([1, 2, 3, 4], last_content_index=2)  # template token 4 after the content
    assistant = EncodedView([5, 6, 7], last_content_index=1)
    row = pack_llm_jepa(CHAT, user, assistant, [99, 98], last_token=None)
    assert row["input_ids"][6:] == [1, 2, 3, 99, 98, 4, 5, 6, 7]
    assert row["position_ids"][6:] == [0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert row["view_a_index"] == 6 + 4  # the last predictor
    assert row["view_b_index"] == 12 + 1  # the assistant's last content token
    allowed = allowed_attention(torch.tensor([row["block_start"]]), torch.tensor([row["context_end"]]))[0]
    assert picture(allowed)[10] == "......#####" + "...."
    assert picture(allowed)[14] == "............###"
    # An explicit offset counts from the view's end: -2 is the last predictor here, and 7's neighbour 6.
    row = pack_llm_jepa(CHAT, user, assistant, [99, 98], last_token=-2)
    assert (row["view_a_index"], row["view_b_index"]) == (6 + 4, 12 + 1)


def test_collator_aligns_conversations_and_pads_views():
    short = EncodedChat([20, 21, 22, 23], [-100, 21, 22, 23], 1, [(1, 2), (2, 4)], False)
    rows = [pack_step_jepa(CHAT, [99]), pack_step_jepa(short, [99])]
    batch = PackedCollator(pad_token_id=0)(rows)
    # Width 6 for conversations, then 3 view tokens; the short row's views move right by 2.
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 13, 14, 15, 99, 14, 15],
        [20, 21, 22, 23, 0, 0, 99, 22, 23],
    ]
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 0, 2, 0, 1]
    assert batch["view_a_index"].tolist() == [6, 6] and batch["view_b_index"].tolist() == [8, 8]
    allowed = batch["attention_mask"][1, 0] == 0
    assert picture(allowed) == [
        "#........",
        "##.......",
        "###......",
        "####.....",
        "....#....",  # padding sees only itself (no fully masked row, no NaN)
        ".....#...",
        "##....#..",  # predictor after step 1 (tokens 0-1)
        ".......#.",
        ".......##",
    ]
    assert batch["attention_mask"].dtype == torch.float32
    assert torch.isinf(batch["attention_mask"][1, 0, 6, 2]) and batch["attention_mask"][1, 0, 6, 1] == 0
    assert int(batch["conversation_width"]) == 6 and int(batch["num_tokens"]) == 10


def test_conversation_only_drops_views():
    batch = PackedCollator(pad_token_id=0)([pack_step_jepa(CHAT, [99]), pack_regular(CHAT)])
    lm_only = conversation_only(batch)
    assert lm_only["input_ids"].shape == (2, 6) and lm_only["attention_mask"].shape == (2, 1, 6, 6)
    assert lm_only["view_a_index"].tolist() == [NO_VIEW, NO_VIEW]

"""Layout, positions and masks on small cases checked by hand."""

from __future__ import annotations

import random

import pytest
import torch

from stepjepa.core.layout import (
    NO_VIEW,
    PackedCollator,
    allowed_attention,
    conversation_only,
    draw_one_pair_per_row,
    pack_llm_jepa,
    pack_regular,
    pack_step_jepa,
    select_pairs,
    step_pair_numbers,
)
from stepjepa.core.tokenization import EncodedChat, EncodedView

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
    batch = PackedCollator(pad_token_id=0, fill_padding=False)(rows)
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


def test_collator_fills_the_padding_with_isolated_blocks():
    """Hand-drawn: each predictor follows its own conversation; the step copies, longest first, go after the
    row that ends first (row 1 at 4, then row 1 at 6, as row 0 ends at 7): width 7 instead of 6 + 3."""
    short = EncodedChat([20, 21, 22], [-100, 21, 22], 1, [(1, 2), (2, 3)], False)
    batch = PackedCollator(pad_token_id=0)([pack_step_jepa(CHAT, [99]), pack_step_jepa(short, [99])])
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 13, 14, 15, 99],
        [20, 21, 22, 99, 14, 15, 22],  # predictor, row 0's step 2 copy, its own step 2 copy
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 4], [0, 1, 2, 2, 0, 1, 0]]
    assert batch["labels"][1].tolist() == [-100, 21, 22, -100, -100, -100, -100]
    assert batch["pair_row"].tolist() == [0, 1]
    assert batch["pair_a_row"].tolist() == [0, 1] and batch["pair_view_a"].tolist() == [6, 3]
    assert batch["pair_b_row"].tolist() == [1, 1] and batch["pair_view_b"].tolist() == [5, 6]
    assert batch["pair_span"].tolist() == [[0, 0], [0, 0]]  # neither pair's blocks lie together
    assert picture(batch["attention_mask"][0, 0] == 0)[6] == "####..#"  # system..step 1, then itself
    assert picture(batch["attention_mask"][1, 0] == 0) == [
        "#......",
        "##.....",
        "###....",
        "##.#...",  # predictor after step 1 (tokens 0-1)
        "....#..",  # row 0's step 2 copy: only itself
        "....##.",
        "......#",  # this row's step 2 copy
    ]
    assert int(batch["conversation_width"]) == 6
    with pytest.raises(ValueError, match="fill_padding=False"):
        select_pairs(batch, torch.tensor([True, True]), pad_token_id=0)
    lm_only = conversation_only(batch)  # the regular batch's size; no conversation token sees a view
    assert lm_only["input_ids"].shape == (2, 6) and len(lm_only["pair_row"]) == 0
    assert picture(lm_only["attention_mask"][1, 0] == 0)[:3] == ["#.....", "##....", "###..."]


def test_select_pairs_refuses_a_copy_inside_the_conversation_width():
    """K = 0: CHAT's step 2 copy fits its own row's padding (columns 6-7 of 10), so its span lies together in its
    row, but inside the conversation width, which select_pairs keeps whole: refused, not duplicated."""
    longer = EncodedChat(list(range(30, 40)), [-100] * 2 + list(range(32, 40)), 2, [(2, 10)], False)
    batch = PackedCollator(pad_token_id=0)([pack_step_jepa(CHAT, []), pack_step_jepa(longer, [])])
    assert batch["input_ids"][0].tolist() == [10, 11, 12, 13, 14, 15, 14, 15, 0, 0]
    assert batch["pair_span"].tolist() == [[6, 8]]
    with pytest.raises(ValueError, match="fill_padding=False"):
        select_pairs(batch, torch.tensor([True]), pad_token_id=0)


def test_conversation_only_drops_views():
    batch = PackedCollator(pad_token_id=0)([pack_step_jepa(CHAT, [99]), pack_regular(CHAT)])
    lm_only = conversation_only(batch)
    assert lm_only["input_ids"].shape == (2, 6) and lm_only["attention_mask"].shape == (2, 1, 6, 6)
    assert lm_only["view_a_index"].tolist() == [NO_VIEW, NO_VIEW]


# Three steps: prompt 10 11, step 1 = 12 13, step 2 = 14 15, step 3 = 16 17.
CHAT3 = EncodedChat([10, 11, 12, 13, 14, 15, 16, 17], [-100, -100, 12, 13, 14, 15, 16, 17], 2,
                    [(2, 4), (4, 6), (6, 8)], False)


def test_step_pair_numbers_per_mode():
    assert step_pair_numbers(CHAT3, "first") == [1]
    assert step_pair_numbers(CHAT3, "all") == step_pair_numbers(CHAT3, "random") == [1, 2]
    one_step = EncodedChat([10, 11, 12, 13], [-100, -100, 12, 13], 2, [(2, 4)], False)
    assert step_pair_numbers(one_step, "all") == [] == step_pair_numbers(one_step, "first")


def test_every_step_predicts_the_next_in_one_row():
    """Hand-drawn: pair 1 = predictor after step 1 + copy of step 2; pair 2 = predictor after step 2 + copy of
    step 3."""
    row = pack_step_jepa(CHAT3, [99], [1, 2])
    assert row["input_ids"] == [10, 11, 12, 13, 14, 15, 16, 17, 99, 14, 15, 99, 16, 17]
    assert row["labels"] == [-100, -100, 12, 13, 14, 15, 16, 17] + [-100] * 6
    # Pair 1's predictor continues step 1 (position 4), pair 2's continues step 2 (position 6); copies start at 0.
    assert row["position_ids"] == [0, 1, 2, 3, 4, 5, 6, 7, 4, 0, 1, 6, 0, 1]
    assert row["regions"][8:] == ["predictor p1", "step_2_copy p1", "step_2_copy p1",
                                  "predictor p2", "step_3_copy p2", "step_3_copy p2"]
    assert row["view_pairs"] == [(8, 10), (11, 13)] and row["pair_spans"] == [(8, 11), (11, 14)]
    assert (row["view_a_index"], row["view_b_index"]) == (8, 10)
    allowed = allowed_attention(torch.tensor([row["block_start"]]), torch.tensor([row["context_end"]]))[0]
    assert picture(allowed) == [
        "#.............",
        "##............",
        "###...........",
        "####..........",
        "#####.........",
        "######........",
        "#######.......",
        "########......",
        "####....#.....",  # pair 1 predictor: system..step 1, then itself
        ".........#....",  # step 2 copy: only itself
        ".........##...",
        "######.....#..",  # pair 2 predictor: system..step 2, then itself (not pair 1's blocks)
        "............#.",  # step 3 copy: only itself
        "............##",
    ]


def test_every_pair_with_identity_predictor_uses_each_steps_last_token():
    row = pack_step_jepa(CHAT3, [], [1, 2])
    assert row["input_ids"] == [10, 11, 12, 13, 14, 15, 16, 17, 14, 15, 16, 17]
    assert row["view_pairs"] == [(3, 9), (5, 11)]  # step 1's and step 2's last tokens; the copies' last tokens


def test_first_pair_default_is_the_single_pair_layout():
    assert pack_step_jepa(CHAT3, [99]) == pack_step_jepa(CHAT3, [99], [1])
    assert pack_step_jepa(CHAT3, [99])["input_ids"] == [10, 11, 12, 13, 14, 15, 16, 17, 99, 14, 15]


def test_collator_lists_every_pair_and_select_pairs_closes_the_gaps():
    rows = [pack_step_jepa(CHAT3, [99], [1, 2]), pack_step_jepa(CHAT, [99])]
    batch = PackedCollator(pad_token_id=0, fill_padding=False)(rows)
    # Width 8; the short row's blocks move right by 2.
    assert batch["pair_row"].tolist() == [0, 0, 1]
    assert batch["pair_view_a"].tolist() == [8, 11, 8] and batch["pair_view_b"].tolist() == [10, 13, 10]
    assert batch["pair_span"].tolist() == [[8, 11], [11, 14], [8, 11]]
    assert batch["view_a_index"].tolist() == [8, 8]
    # Keep row 0's pair 2 and row 1's pair: row 0's pair 1 blocks go, pair 2 moves to column 8.
    selected = select_pairs(batch, torch.tensor([False, True, True]), pad_token_id=0)
    assert selected["input_ids"].tolist() == [
        [10, 11, 12, 13, 14, 15, 16, 17, 99, 16, 17],
        [10, 11, 12, 13, 14, 15, 0, 0, 99, 14, 15],
    ]
    assert selected["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 6, 0, 1]
    assert selected["pair_row"].tolist() == [0, 1] and selected["pair_view_a"].tolist() == [8, 8]
    assert selected["pair_view_b"].tolist() == [10, 10] and selected["pair_span"].tolist() == [[8, 11], [8, 11]]
    assert picture(selected["attention_mask"][0, 0] == 0)[8:] == ["######..#..", ".........#.", ".........##"]
    # The same as packing the kept pairs alone.
    alone = PackedCollator(pad_token_id=0, fill_padding=False)([pack_step_jepa(CHAT3, [99], [2]), pack_step_jepa(CHAT, [99])])
    for key in alone:
        assert torch.equal(selected[key], alone[key]), key


def test_one_pair_per_row_is_drawn_from_seed_step_and_example():
    rows = [pack_step_jepa(CHAT3, [99], [1, 2]), pack_regular(CHAT), pack_step_jepa(CHAT, [99])]
    for number, row in enumerate(rows):
        row["example_index"] = 40 + number
    batch = PackedCollator(pad_token_id=0)(rows)
    draws = [draw_one_pair_per_row(batch, seed=3, step=step).tolist() for step in range(20)]
    assert all(d[2] and d[0] + d[1] == 1 for d in draws)  # one pair of each row with pairs
    assert {tuple(d[:2]) for d in draws} == {(True, False), (False, True)}  # both pairs of row 0 come up
    assert draws[5] == draw_one_pair_per_row(batch, seed=3, step=5).tolist()
    # The draw is that of random.Random("seed:step:example"), whatever else is in the batch.
    assert draws[7][0] == (random.Random("3:7:40").randrange(2) == 0)


def test_conversation_only_drops_every_pair():
    batch = PackedCollator(pad_token_id=0)([pack_step_jepa(CHAT3, [99], [1, 2])])
    lm_only = conversation_only(batch)
    assert lm_only["input_ids"].shape == (1, 8) and lm_only["pair_row"].numel() == 0

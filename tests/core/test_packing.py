"""Several conversations per batch row (--packing): the best-fit-decreasing plan, the packed row's mask drawn by
hand, a property that every token of a pack sees exactly what it sees alone, and the packed pass against the
oracle of tests/core/test_objective.py (separate passes per conversation and per view; it never packs)."""

from __future__ import annotations

import copy
import random

import pytest
from conftest import property_examples
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layout import CHAT, picture
from test_layout_properties import all_and_kept_rows, allowed_of, assert_same_batch, chats
from test_objective import (MAX_LENGTH, assert_matches_oracle, batch_chats, drawn_pairs, every_pair_by_hand, grads,
                            oracle, setup)

from stepjepa.core.attention import flex_block_mask
from stepjepa.core.examples import RowSettings, pack_chat
from stepjepa.core.layout import (
    TOKEN_KEYS,
    PackedCollator,
    allowed_attention,
    conversation_only,
    draw_one_pair_per_row,
    pack_llm_jepa,
    pack_step_jepa,
    padding_columns,
    select_pairs,
    step_pair_numbers,
)
from stepjepa.core.losses import JEPA_LOSSES
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.core.packing import PackedDataset, best_fit_decreasing, fill_ratio
from stepjepa.core.tokenization import IGNORE_INDEX, EncodedChat, EncodedView
from stepjepa.core.errors import UsageError

# --- the plan ------------------------------------------------------------------------------------------------------


def test_best_fit_decreasing_by_hand():
    """Capacity 8, lengths 5 4 3 3 2 1: 5 opens A (room 3); 4 opens B (room 4); the first 3 fits A exactly (room 0);
    the second 3 goes to B (room 1); 2 fits nowhere and opens C (room 6); 1 fits B (room 1) better than C."""
    assert best_fit_decreasing([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    # A row longer than the pack length gets a pack of its own; nothing is cut.
    assert best_fit_decreasing([3, 11, 5], 8) == [[1], [0, 2]]
    assert best_fit_decreasing([], 8) == []
    with pytest.raises(UsageError, match="at least 1"):
        best_fit_decreasing([1], 0)


def reference_loads(lengths: list[int], capacity: int) -> list[int]:
    """Best-fit decreasing from its definition, by scanning every pack: the packs' loads, sorted."""
    loads: list[int] = []
    for length in sorted(lengths, reverse=True):
        fitting = [p for p, load in enumerate(loads) if length <= capacity and load + length <= capacity]
        if fitting:
            best = min(fitting, key=lambda p: capacity - loads[p])
            loads[best] += length
        else:
            loads.append(length)
    return sorted(loads)


@settings(max_examples=property_examples(200), deadline=None)
@given(st.lists(st.integers(1, 40), max_size=60), st.integers(1, 48))
def test_plan_places_every_row_once_within_the_pack_length(lengths, capacity):
    plan = best_fit_decreasing(lengths, capacity)
    assert sorted(i for pack in plan for i in pack) == list(range(len(lengths)))  # every row in exactly one pack
    for pack in plan:
        load = sum(lengths[i] for i in pack)
        assert load <= capacity or len(pack) == 1  # only a row over the length stands alone over it
        assert pack == sorted(pack)
    assert sorted(sum(lengths[i] for i in pack) for pack in plan) == reference_loads(lengths, capacity)
    assert 0 < fill_ratio(lengths, plan, capacity) <= 1 or not lengths


def test_packed_dataset_reads_each_pack():
    rows = [{"n": i} for i in range(5)]
    data = PackedDataset(rows, [[0, 3], [1, 2, 4]], expand=lambda row: {"m": row["n"] * 10})
    assert len(data) == 2 and data[1] == [{"m": 10}, {"m": 20}, {"m": 40}]
    assert fill_ratio([4, 2, 2, 3, 1], [[0, 3], [1, 2, 4]], 8) == 12 / 16


# --- the packed row, by hand ---------------------------------------------------------------------------------------

# Three conversation tokens: prompt 20, step 1 = 21, step 2 = 22.
SHORT = EncodedChat([20, 21, 22], [-100, 21, 22], 1, [(1, 2), (2, 3)], False)


def test_two_conversations_in_one_row():
    """Hand-drawn: CHAT (columns 0-5) and SHORT (6-8) side by side, then the predictors, each after its own
    conversation's blocks would start (9: CHAT's, 10: SHORT's), then the isolated step copies, longest first.
    SHORT sees nothing of CHAT; its predictor sees SHORT's prompt and step 1 only; positions restart at 6."""
    batch = PackedCollator(pad_token_id=0)([[pack_step_jepa(CHAT, [99]), pack_step_jepa(SHORT, [99])]])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 14, 15, 20, 21, 22, 99, 99, 14, 15, 22]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 0, 1, 2, 4, 2, 0, 1, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 12, 13, 14, 15, -100, 21, 22] + [-100] * 5]
    assert picture(batch["attention_mask"][0, 0] == 0) == [
        "#.............",
        "##............",
        "###...........",
        "####..........",
        "#####.........",
        "######........",
        "......#.......",  # SHORT starts afresh: nothing of CHAT
        "......##......",
        "......###.....",
        "####.....#....",  # CHAT's predictor: CHAT's prompt and step 1, then itself
        "......##..#...",  # SHORT's predictor: SHORT's prompt and step 1 (not CHAT), then itself
        "...........#..",  # CHAT's step 2 copy: only itself
        "...........##.",
        ".............#",  # SHORT's step 2 copy
    ]
    assert batch["doc_start"].tolist() == [[0] * 6 + [6] * 3 + [0, 6, 11, 11, 13]]
    assert batch["pair_row"].tolist() == [0, 0] and batch["pair_example"].tolist() == [0, 1]
    assert batch["pair_view_a"].tolist() == [9, 10] and batch["pair_view_b"].tolist() == [12, 13]
    assert batch["view_a_index"].tolist() == [9, 10]  # one per example
    assert int(batch["conversation_width"]) == 9 and int(batch["num_tokens"]) == 9
    assert int(batch["conversation_rows"]) == 1
    lm_only = conversation_only(batch)
    assert picture(lm_only["attention_mask"][0, 0] == 0)[6] == "......#.."


def test_one_example_per_item_is_the_unpacked_batch():
    """A pack of one is the example's row as before: the collated batch is unchanged, doc_start aside."""
    rows = [pack_step_jepa(CHAT, [99]), pack_step_jepa(SHORT, [99])]
    for fill in (True, False):
        plain = PackedCollator(pad_token_id=0, fill_padding=fill)(rows)
        packs = PackedCollator(pad_token_id=0, fill_padding=fill)([[row] for row in rows])
        assert plain.keys() == packs.keys()
        for key in plain:
            assert torch.equal(plain[key], packs[key]), key


def test_one_padding_table_gives_every_token_column():
    """The batch's (B, T) columns are exactly the table's, and a padding token holds the pad id, no label, and
    sees only itself."""
    batch = PackedCollator(pad_token_id=7)([[pack_step_jepa(CHAT, [99])], [pack_step_jepa(SHORT, [99])]])
    shape = batch["input_ids"].shape
    assert {key for key, value in batch.items() if value.shape == shape} == set(TOKEN_KEYS)
    pad = padding_columns(1, 3, 7)
    assert list(pad) == list(TOKEN_KEYS)
    assert pad["input_ids"].tolist() == [[7, 7, 7]] and pad["labels"].tolist() == [[IGNORE_INDEX] * 3]
    assert allowed_attention(pad["block_start"], pad["context_end"], pad["doc_start"])[0].tolist() == [
        [True, False, False], [False, True, False], [False, False, True]]


# --- placement property --------------------------------------------------------------------------------------------


def example_rows(draw_chat, k: int, kind: str) -> dict:
    if kind == "llm_jepa":
        user = EncodedView(list(range(200, 205)), 3)
        assistant = EncodedView(list(range(300, 303)), 2)
        return pack_llm_jepa(draw_chat, user, assistant, list(range(100, 100 + k)), None)
    return pack_step_jepa(draw_chat, list(range(100, 100 + k)), step_pair_numbers(draw_chat, kind))


@settings(max_examples=property_examples(60), deadline=None)
@given(st.lists(st.tuples(chats(), st.integers(0, 2), st.sampled_from(["first", "all", "llm_jepa"])),
                min_size=1, max_size=7),
       st.integers(12, 90), st.booleans(), st.sampled_from(["never", "always", "auto"]))
def test_every_token_of_a_pack_sees_exactly_what_it_sees_alone(examples, pack_length, fill_padding, view_rows):
    """For rows packed by the plan: every token sits in a cell of its own holding its id and position (they
    restart per conversation), sees exactly the cells of what it sees in its own row alone, every labelled cell
    is predicted by its own conversation's previous token, padding sees only itself. The witness of where each
    token went (checked, not trusted): conversations side by side in their pack's row, and each view block as
    one piece around the cell the batch names for its view token."""
    rows = [example_rows(chat, k, kind) for chat, k, kind in examples]
    plan = best_fit_decreasing([len(row["input_ids"]) for row in rows], pack_length)
    batch = PackedCollator(pad_token_id=0, fill_padding=fill_padding, view_rows=view_rows)(
        [[rows[i] for i in pack] for pack in plan])
    allowed = allowed_attention(batch["block_start"], batch["context_end"], batch["doc_start"])
    total_rows, total = batch["input_ids"].shape
    order = [i for pack in plan for i in pack]  # examples in batch order
    cells: dict[int, dict[int, tuple[int, int]]] = {}
    for b, pack in enumerate(plan):
        column = 0
        for i in pack:
            length = rows[i]["conversation_length"]
            cells[i] = {j: (b, column + j) for j in range(length)}
            column += length
    for example_number, i in enumerate(order):
        row = rows[i]
        pairs = [p for p in range(len(batch["pair_row"])) if int(batch["pair_example"][p]) == example_number]
        assert len(pairs) == len(row["view_pairs"])
        for p, (a, v) in zip(pairs, row["view_pairs"]):
            for index, side in ((a, "a"), (v, "b")):
                where = (int(batch[f"pair_{side}_row"][p]), int(batch[f"pair_view_{side}"][p]))
                if index < row["conversation_length"]:
                    assert cells[i][index] == where
                    continue
                start = end = row["block_start"][index]
                while end < len(row["input_ids"]) and row["block_start"][end] == start:
                    end += 1
                cells[i].update({j: (where[0], where[1] + j - index) for j in range(start, end)})
        assert sorted(cells[i]) == list(range(len(row["input_ids"])))
    owner: dict[tuple[int, int], int] = {}
    for i, cell in cells.items():
        for j, where in cell.items():
            assert where not in owner  # no two tokens in one cell
            owner[where] = i
            for key in ("input_ids", "position_ids"):
                assert int(batch[key][where]) == rows[i][key][j]
            label = int(batch["labels"][where])
            assert label == (IGNORE_INDEX if j == 0 and where[1] else rows[i]["labels"][j])
    for i, cell in cells.items():
        alone = allowed_of(rows[i])
        assert batch["position_ids"][cell[0]] == 0  # positions restart per conversation
        for j, (r, c) in cell.items():
            seen = {(r, col) for col in range(total) if allowed[r, c, col]}
            assert seen == {cell[m] for m in range(len(rows[i]["input_ids"])) if alone[j, m]}
            if int(batch["labels"][r, c]) != IGNORE_INDEX and c:
                assert cell.get(j - 1) == (r, c - 1)  # the previous cell is this conversation's previous token
    for r in range(total_rows):
        for c in range(total):
            if (r, c) not in owner:
                assert allowed[r, c].nonzero().flatten().tolist() == [c]  # padding sees only itself
                assert int(batch["labels"][r, c]) == IGNORE_INDEX
    assert int(batch["num_tokens"]) == sum(row["conversation_length"] for row in rows)


@settings(max_examples=property_examples(40), deadline=None)
@given(st.lists(st.tuples(chats(), st.integers(0, 2), st.integers(0, 10)), min_size=1, max_size=6),
       st.integers(12, 70))
def test_selecting_pairs_in_packs_equals_packing_them_alone(rows_k_choice, pack_length):
    """--step_pairs random, packed: select_pairs on all-pairs packs gives the packs built with the kept pairs."""
    packed, alone, keeps = all_and_kept_rows(rows_k_choice)
    plan = best_fit_decreasing([len(row["input_ids"]) for row in packed], pack_length)
    keep = torch.tensor([flag for pack in plan for i in pack for flag in keeps[i]], dtype=torch.bool)
    collate = PackedCollator(pad_token_id=0, fill_padding=False, view_rows="never")
    selected = select_pairs(collate([[packed[i] for i in pack] for pack in plan]), keep, pad_token_id=0)
    assert_same_batch(selected, collate([[alone[i] for i in pack] for pack in plan]))


def test_one_pair_is_drawn_per_example_not_per_row():
    """Two examples in one row each keep one of their own pairs, drawn from their own example index."""
    three = EncodedChat([10, 11, 12, 13, 14, 15, 16, 17], [-100, -100, 12, 13, 14, 15, 16, 17], 2,
                        [(2, 4), (4, 6), (6, 8)], False)
    rows = [pack_step_jepa(three, [99], [1, 2]), pack_step_jepa(three, [99], [1, 2])]
    rows[0]["example_index"], rows[1]["example_index"] = 40, 41
    batch = PackedCollator(pad_token_id=0, fill_padding=False)([rows])
    assert batch["pair_row"].tolist() == [0, 0, 0, 0] and batch["example_index"].tolist() == [40, 41]
    for step in range(10):
        keep = draw_one_pair_per_row(batch, seed=3, step=step).tolist()
        assert keep[:2].count(True) == 1 and keep[2:].count(True) == 1
        assert keep[0] == (random.Random(f"3:{step}:40").randrange(2) == 0)
        assert keep[2] == (random.Random(f"3:{step}:41").randrange(2) == 0)


def test_block_mask_of_a_packed_batch_is_the_dense_rule():
    """FlexAttention's mask_mod, token by token, is the dense mask of a packed batch (doc_start included)."""
    rows = [pack_step_jepa(CHAT, [99]), pack_step_jepa(SHORT, [99]), pack_step_jepa(SHORT, [98, 97])]
    batch = PackedCollator(pad_token_id=0, dense_mask=False)([rows[:2], rows[2:]])
    assert "attention_mask" not in batch
    block_mask = flex_block_mask(batch["block_start"], batch["context_end"], batch["doc_start"])
    rows_, length = batch["input_ids"].shape
    b, q, k = torch.meshgrid(torch.arange(rows_), torch.arange(length), torch.arange(length), indexing="ij")
    dense = allowed_attention(batch["block_start"], batch["context_end"], batch["doc_start"])
    assert torch.equal(block_mask.mask_mod(b, torch.zeros_like(b), q, k), dense)
    assert not dense[0, 6, :6].any()  # the second conversation sees nothing of the first


# --- the packed pass against the oracle ----------------------------------------------------------------------------

# Nine chats in three rows of 2, 4 and 3 conversations; chat 3 has a single step (Step-JEPA trains it LM only).
PACKS = [[0, 1], [2, 3, 4, 5], [6, 7, 8]]


def nine_chats(tiny_chats):
    return batch_chats(tiny_chats) + [row["messages"] for row in tiny_chats[4:9]]


def packed_output(model, tokenizer, chats, mode, predictor_ids, objective, step_pairs="first", fill_padding=True,
                  view_rows="auto", dense_mask=True, seed=5, step=3):
    rows = [pack_chat(tokenizer, m, RowSettings(mode, predictor_ids, None, MAX_LENGTH, step_pairs)) for m in chats]
    for index, row in enumerate(rows):
        row["example_index"] = index
    pad = tokenizer.pad_token_id or 0
    collate = PackedCollator(pad, dense_mask=dense_mask, fill_padding=fill_padding and step_pairs != "random",
                             view_rows="never" if step_pairs == "random" else view_rows)
    batch = collate([[rows[i] for i in pack] for pack in PACKS])
    assert batch["input_ids"].shape[0] >= len(PACKS) and int(batch["conversation_rows"]) == len(PACKS)
    if step_pairs == "random":
        batch = select_pairs(batch, draw_one_pair_per_row(batch, seed, step), pad)
    return compute_objective(model, batch, objective)


def check_packed_against_oracle(model, tokenizer, chats, mode, predictor_ids, loss_kind, stop_grad=False,
                                step_pairs="first", fill_padding=True, view_rows="auto"):
    objective = Objective(mode=mode, loss=loss_kind, lbd=0.7, gamma=1.3, target_stop_grad=stop_grad)
    packed = packed_output(model, tokenizer, chats, mode, predictor_ids, objective, step_pairs, fill_padding,
                           view_rows)
    packed.loss.backward()
    packed_grads = grads(model)

    # The pairs, found without the code's draw: every pair read off the text, or the one per chat whose separate-pass
    # views equal the packed pass's (test_objective.drawn_pairs); None: the first pair of each chat.
    pairs = None
    if step_pairs == "all":
        pairs = every_pair_by_hand(chats)
    elif step_pairs == "random":
        pairs = drawn_pairs(model, tokenizer, chats, predictor_ids, packed)
    loss, lm, view_a, view_b = oracle(model, tokenizer, chats, mode, predictor_ids, loss_kind, stop_grad=stop_grad,
                                      pairs_per_chat=pairs)
    loss.backward()
    oracle_grads = grads(model)

    # Step-JEPA: chat 3 has one step; first: 8 pairs, all: 2-3 for each other chat, random: one each.
    expected = len(chats) - (mode == "step_jepa") if pairs is None else sum(map(len, pairs))
    assert expected >= 8
    assert_matches_oracle(packed, (loss, lm, view_a, view_b), mode, expected, packed_grads, oracle_grads)


# The fast tier: one case per path. Step-JEPA's predictors (bounded below by doc_start) and step copies moved into
# other rows, on GPT-2's learned positions (positions must restart exactly); LLM-JEPA's views, isolated, in rows of
# their own, on Llama; --step_pairs random on packed rows (select_pairs, one pair per example).
FAST = [("gpt2", "step_jepa", 2, "cosine", False, "first"), ("llama", "llm_jepa", 1, "cosine", False, "first"),
        ("gpt2", "step_jepa", 1, "l2", True, "random")]


@pytest.mark.parametrize("family,mode,num_predictors,loss_kind,stop_grad,step_pairs", FAST)
def test_packed_rows_match_the_oracle(tiny_model_dirs, tiny_chats, family, mode, num_predictors, loss_kind,
                                      stop_grad, step_pairs):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], num_predictors)
    check_packed_against_oracle(model, tokenizer, nine_chats(tiny_chats), mode, predictor_ids, loss_kind, stop_grad,
                                step_pairs, view_rows="always" if mode == "llm_jepa" else "auto")


SLOW = [("regular", 0, "cosine", False, "first")] + [
    (mode, k, loss, stop, pairs) for mode in ("llm_jepa", "step_jepa") for k in (0, 1, 2) for loss in JEPA_LOSSES
    for stop in (False, True) for pairs in (("first", "all", "random") if mode == "step_jepa" else ("first",))
]


@pytest.mark.slow
@pytest.mark.parametrize("mode,num_predictors,loss_kind,stop_grad,step_pairs", SLOW)
def test_every_packed_case_matches_the_oracle(tiny_model_dir, tiny_chats, mode, num_predictors, loss_kind, stop_grad,
                                              step_pairs):
    model, tokenizer, predictor_ids = setup(tiny_model_dir, num_predictors)
    check_packed_against_oracle(model, tokenizer, nine_chats(tiny_chats), mode, predictor_ids, loss_kind, stop_grad,
                                step_pairs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["llm_jepa", "step_jepa"])
@pytest.mark.parametrize("fill_padding,view_rows", [(False, "never"), (True, "never"), (True, "always")])
def test_packed_layouts_match_the_oracle(tiny_model_dir, tiny_chats, mode, fill_padding, view_rows):
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 2)
    check_packed_against_oracle(model, tokenizer, nine_chats(tiny_chats), mode, predictor_ids, "cosine",
                                fill_padding=fill_padding, view_rows=view_rows)


@pytest.mark.parametrize("family", ["llama", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_packed_rows_under_eager_attention_match_the_oracle(tiny_model_dirs, tiny_chats, family):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], 2)
    model.set_attn_implementation("eager")
    check_packed_against_oracle(model, tokenizer, nine_chats(tiny_chats), "step_jepa", predictor_ids, "cosine")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["regular", "llm_jepa"])
def test_packed_rows_under_eager_attention_match_the_oracle_in_every_mode(tiny_model_dir, tiny_chats, mode):
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 0 if mode == "regular" else 1)
    model.set_attn_implementation("eager")
    check_packed_against_oracle(model, tokenizer, nine_chats(tiny_chats), mode, predictor_ids, "cosine")


@pytest.fixture
def eager_flex(monkeypatch):
    """transformers compiles flex_attention on first use (minutes on this CPU); eager computes the same."""
    import transformers.integrations.flex_attention as integration
    from torch.nn.attention.flex_attention import flex_attention

    def eager(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(integration, "compile_friendly_flex_attention", eager)


@pytest.mark.parametrize("mode,num_predictors", [("step_jepa", 2), pytest.param("llm_jepa", 1, marks=pytest.mark.slow),
                                                 pytest.param("regular", 0, marks=pytest.mark.slow),
                                                 pytest.param("step_jepa", 0, marks=pytest.mark.slow)])
def test_packed_flex_forward_matches_the_oracle(tiny_model_dirs, tiny_chats, eager_flex, mode, num_predictors):
    """Llama (GPT-2 has no flex_attention in transformers); forward only: FlexAttention has no CPU backward."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], num_predictors)
    flex = copy.deepcopy(model)
    flex.set_attn_implementation("flex_attention")
    chats = nine_chats(tiny_chats)
    objective = Objective(mode=mode, loss="cosine", lbd=0.7, gamma=1.3)
    with torch.no_grad():
        packed = packed_output(flex, tokenizer, chats, mode, predictor_ids, objective, dense_mask=False)
        expected = oracle(model, tokenizer, chats, mode, predictor_ids, "cosine")
    assert_matches_oracle(packed, expected, mode)


def test_lm_only_step_of_packed_rows_matches_the_oracle(tiny_model_dirs, tiny_chats):
    """use_jepa=False on packed rows (the view blocks dropped): the conversations' LM loss as in separate passes."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["gpt2"], 2)
    chats = nine_chats(tiny_chats)
    rows = [pack_chat(tokenizer, m, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH)) for m in chats]
    batch = PackedCollator(tokenizer.pad_token_id or 0)([[rows[i] for i in pack] for pack in PACKS])
    out = compute_objective(model, batch, Objective(mode="step_jepa", lbd=0.7, gamma=1.3), use_jepa=False)
    _, lm, _, _ = oracle(model, tokenizer, chats, "regular", [], "cosine")
    assert out.jepa_loss is None and out.lm_tokens > 0
    torch.testing.assert_close(out.lm_loss, lm, rtol=1e-4, atol=1e-5)

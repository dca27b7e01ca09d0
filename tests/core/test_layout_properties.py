"""Property tests of the packed layout: who sees whom, for any conversation, step split and K."""

from __future__ import annotations

import torch
from conftest import property_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from stepjepa.core.layout import (
    PackedCollator,
    allowed_attention,
    pack_llm_jepa,
    pack_step_jepa,
    select_pairs,
    step_pair_numbers,
)
from stepjepa.core.tokenization import EncodedChat, EncodedView
from stepjepa.core.view_rows import appended_placement


@st.composite
def chats(draw) -> EncodedChat:
    length = draw(st.integers(4, 40))
    prompt = draw(st.integers(1, length - 2))
    cuts = sorted(draw(st.sets(st.integers(prompt + 1, length - 1), max_size=5)))
    bounds = [prompt, *cuts, length]
    spans = list(zip(bounds[:-1], bounds[1:]))
    ids = draw(st.lists(st.integers(3, 90), min_size=length, max_size=length))
    labels = [-100] * prompt + ids[prompt:]
    return EncodedChat(ids, labels, prompt, spans, False)


def allowed_of(row) -> torch.Tensor:
    return allowed_attention(torch.tensor([row["block_start"]]), torch.tensor([row["context_end"]]))[0]


@settings(max_examples=property_examples(200), deadline=None)
@given(chats(), st.integers(0, 3))
def test_step_jepa_visibility(chat, k):
    row = pack_step_jepa(chat, list(range(100, 100 + k)))
    allowed = allowed_of(row)
    n, length = len(row["input_ids"]), len(chat.input_ids)
    assert allowed.diagonal().all()
    assert torch.equal(allowed[:length, :length], torch.ones(length, length, dtype=torch.bool).tril())
    assert not allowed[:length, length:].any()  # the conversation never sees a view block
    if len(chat.step_spans) < 2:
        assert n == length and row["view_a_index"] == -1
        return
    (_, step1_end), (s2, e2) = chat.step_spans[:2]
    for i in range(length, length + k):  # predictors: system..step 1, then the predictors before them
        expected = [j < step1_end or length <= j <= i for j in range(n)]
        assert allowed[i].tolist() == expected
        assert row["position_ids"][i] == step1_end + (i - length)
    copy = range(length + k, n)
    assert [row["input_ids"][i] for i in copy] == chat.input_ids[s2:e2]
    for i in copy:  # the step 2 copy sees only itself
        assert allowed[i].tolist() == [length + k <= j <= i for j in range(n)]
    assert [row["position_ids"][i] for i in copy] == list(range(e2 - s2))
    assert row["view_b_index"] == n - 1
    assert row["view_a_index"] == (length + k - 1 if k else step1_end - 1)


@settings(max_examples=property_examples(100), deadline=None)
@given(chats(), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2))
def test_llm_jepa_views_see_only_themselves(chat, user_len, assistant_len, k):
    user = EncodedView(list(range(200, 200 + user_len)), user_len - 1)
    assistant = EncodedView(list(range(300, 300 + assistant_len)), assistant_len - 1)
    row = pack_llm_jepa(chat, user, assistant, list(range(100, 100 + k)), None)
    allowed = allowed_of(row)
    length, user_block = len(chat.input_ids), user_len + k
    for i in range(length, len(row["input_ids"])):
        start = length if i < length + user_block else length + user_block
        assert allowed[i].tolist() == [start <= j <= i for j in range(len(row["input_ids"]))]
    assert row["view_a_index"] == length + user_block - 1


@settings(max_examples=property_examples(60), deadline=None)
@given(st.lists(st.tuples(chats(), st.integers(0, 3)), min_size=1, max_size=4))
def test_collated_mask_is_each_rows_mask_with_padding_apart(rows_and_k):
    rows = [pack_step_jepa(chat, list(range(100, 100 + k))) for chat, k in rows_and_k]
    batch = PackedCollator(pad_token_id=0, fill_padding=False)(rows)
    allowed = batch["attention_mask"][:, 0] == 0
    width = int(batch["conversation_width"])
    assert allowed.diagonal(dim1=1, dim2=2).all()  # no fully masked row
    for b, row in enumerate(rows):
        length, size = row["conversation_length"], len(row["input_ids"])
        keep = list(range(length)) + list(range(width, width + size - length))
        assert torch.equal(allowed[b][keep][:, keep], allowed_of(row))
        assert batch["input_ids"][b, keep].tolist() == row["input_ids"]
        padding = [i for i in range(allowed.shape[-1]) if i not in keep]
        assert not allowed[b][keep][:, padding].any()  # real tokens never see padding
        for key in ("view_a_index", "view_b_index"):
            if row[key] >= 0:
                assert keep[row[key]] == int(batch[key][b])


@settings(max_examples=property_examples(150), deadline=None)
@given(chats(), st.integers(0, 3))
def test_every_pair_sees_what_its_own_pass_sees(chat, k):
    """Pair p's predictors see system..step p and themselves; step p+1's copy sees only itself; no pair sees another."""
    row = pack_step_jepa(chat, list(range(100, 100 + k)), step_pair_numbers(chat, "all"))
    allowed = allowed_of(row)
    n, length = len(row["input_ids"]), len(chat.input_ids)
    assert not allowed[:length, length:].any()
    assert len(row["view_pairs"]) == max(len(chat.step_spans) - 1, 0)
    column = length
    for p, ((view_a, view_b), (start, end)) in enumerate(zip(row["view_pairs"], row["pair_spans"]), start=1):
        (_, context_end), (s2, e2) = chat.step_spans[p - 1], chat.step_spans[p]
        assert start == column and end == column + k + e2 - s2
        for i in range(start, start + k):
            assert allowed[i].tolist() == [j < context_end or start <= j <= i for j in range(n)]
            assert row["position_ids"][i] == context_end + i - start
        copy = range(start + k, end)
        assert [row["input_ids"][i] for i in copy] == chat.input_ids[s2:e2]
        for i in copy:
            assert allowed[i].tolist() == [start + k <= j <= i for j in range(n)]
        assert view_a == (start + k - 1 if k else context_end - 1) and view_b == end - 1
        column = end
    assert column == n


@settings(max_examples=property_examples(60), deadline=None)
@given(st.lists(st.tuples(chats(), st.integers(0, 2), st.integers(0, 10)), min_size=1, max_size=4))
def test_selecting_pairs_equals_packing_them_alone(rows_k_choice):
    """select_pairs on an all-pairs batch gives the batch of rows packed with the kept pairs only."""
    packed, alone, keeps = all_and_kept_rows(rows_k_choice)
    collate = PackedCollator(pad_token_id=0, fill_padding=False)
    keep = torch.tensor([flag for flags in keeps for flag in flags], dtype=torch.bool)
    assert_same_batch(select_pairs(collate(packed), keep, pad_token_id=0), collate(alone))


def all_and_kept_rows(rows_k_choice) -> tuple[list[dict], list[dict], list[list[bool]]]:
    """Per ``(chat, K, choice)``: its Step-JEPA row with every step pair, its row with only the chosen pair (choice
    modulo its pairs), and the keep mask over its pairs."""
    packed, alone, keeps = [], [], []
    for chat, k, choice in rows_k_choice:
        numbers = step_pair_numbers(chat, "all")
        kept = [numbers[choice % len(numbers)]] if numbers else []
        packed.append(pack_step_jepa(chat, list(range(100, 100 + k)), numbers))
        alone.append(pack_step_jepa(chat, list(range(100, 100 + k)), kept))
        keeps.append([number in kept for number in numbers])
    return packed, alone, keeps


def assert_same_batch(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


@settings(max_examples=property_examples(60), deadline=None)
@given(st.lists(st.tuples(chats(), st.integers(0, 3), st.booleans()), min_size=1, max_size=4), st.booleans())
def test_any_placement_computes_each_row_as_alone(rows_k_all, fill_padding):
    """Wherever the collator puts the view blocks (their columns read back from the placement, taken here as a
    witness, not trusted): every token of every example sits in a cell of its own, holds its id, label and
    position, sees exactly what it sees in its own packed row (blocks in another batch row included: they see
    nothing of their old row), and no real token sees a cell of another example or padding."""
    rows = [pack_step_jepa(chat, list(range(100, 100 + k)), step_pair_numbers(chat, "all" if every else "first"))
            for chat, k, every in rows_k_all]
    batch = PackedCollator(pad_token_id=0, fill_padding=fill_padding)(rows)
    width = max(row["conversation_length"] for row in rows)
    placement, total = appended_placement(rows, width, fill_padding)
    allowed = batch["attention_mask"][:, 0] == 0
    assert batch["input_ids"].shape == (len(rows), total)
    owner = {}
    cells = []
    for b, row in enumerate(rows):
        cell = {i: (b, i) for i in range(row["conversation_length"])}
        for start, end, into, column in placement[b]:
            cell.update({i: (into, column + i - start) for i in range(start, end)})
        assert sorted(cell) == list(range(len(row["input_ids"])))  # every token placed once
        for i, where in cell.items():
            assert where not in owner  # no two tokens in one cell
            owner[where] = b
            for key in ("input_ids", "labels", "position_ids"):
                assert int(batch[key][where]) == row[key][i]
        cells.append(cell)
    for b, row in enumerate(rows):
        alone = allowed_of(row)
        for i, (r, c) in cells[b].items():
            seen = {(r, j) for j in range(total) if allowed[r, c, j]}
            assert seen == {cells[b][j] for j in range(len(row["input_ids"])) if alone[i, j]}
        pairs = [(cells[b][a], cells[b][v]) for a, v in row["view_pairs"]]
        got = [((int(batch["pair_a_row"][p]), int(batch["pair_view_a"][p])),
                (int(batch["pair_b_row"][p]), int(batch["pair_view_b"][p])))
               for p in range(len(batch["pair_row"])) if int(batch["pair_row"][p]) == b]
        assert got == pairs
    for r in range(len(rows)):  # padding sees only itself
        for c in range(total):
            if (r, c) not in owner:
                assert allowed[r, c].nonzero().flatten().tolist() == [c]
    if not fill_padding:
        assert total == width + max(len(row["input_ids"]) - row["conversation_length"] for row in rows)

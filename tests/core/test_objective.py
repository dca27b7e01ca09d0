"""The packed single pass against the oracle: one separate forward pass per view, as the definitions read."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from stepjepa.core.examples import RowSettings, build_rows, pack_chat
from stepjepa.core.layout import PackedCollator, draw_one_pair_per_row, select_pairs
from stepjepa.core.losses import JEPA_LOSSES, jepa_loss
from stepjepa.core.objective import Objective, compute_objective
from stepjepa.core.tokenization import IGNORE_INDEX, encode_chat, encode_view
from stepjepa.models import add_predictor_tokens, apply_lora, resize_for_tokenizer

MAX_LENGTH = 256
FAMILIES = ("gpt2", "llama")  # the tiny_model_dirs fixture's model families
SLOW = pytest.mark.slow


def hidden_and_logits(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain causal pass over ``ids`` alone (positions 0..n-1): last-layer hidden states and logits."""
    out = model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[-1][0], out.logits[0]


def steps_by_hand(messages) -> list[str]:
    """The assistant reply's steps read off the raw text, independently of the code: paragraphs between blank
    lines (the test chats separate steps by exactly one "\\n\\n"; a single "\\n" stays inside a step)."""
    return [part for part in messages[2]["content"].split("\n\n") if part.strip()]


def pair_views(model, chat, hidden, number: int, predictor_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair ``number`` (1-based: step p -> step p+1) of an encoded chat by separate passes: view_a is the hidden
    state at the end of step p (of the whole chat's pass ``hidden``, or of its own pass over the context and the
    predictor tokens), view_b the last hidden state of step p+1 alone."""
    context_end = chat.step_spans[number - 1][1]
    next_start, next_end = chat.step_spans[number]
    if predictor_ids:
        view_a = hidden_and_logits(model, chat.input_ids[:context_end] + predictor_ids)[0][-1]
    else:
        view_a = hidden[context_end - 1]
    return view_a, hidden_and_logits(model, chat.input_ids[next_start:next_end])[0][-1]


def oracle(model, tokenizer, chats, mode, predictor_ids, loss_kind, lbd=0.7, gamma=1.3, stop_grad=False,
           pairs_per_chat=None):
    """Loss, LM loss, view embeddings, by separate passes; rows without a view pair give LM only.
    Step-JEPA trains pair 1 (step 1 -> step 2) of every chat with two steps (counted on the text by hand), or
    the pairs listed per chat in ``pairs_per_chat`` (pair p: step p -> step p+1, 1-based). ``stop_grad``: the
    target views are detached before the JEPA loss."""
    token_losses, views_a, views_b = [], [], []
    for number, messages in enumerate(chats):
        chat = encode_chat(tokenizer, messages, MAX_LENGTH)
        hidden, logits = hidden_and_logits(model, chat.input_ids)
        targets = torch.tensor(chat.labels[1:])
        losses = F.cross_entropy(logits[:-1], targets, ignore_index=IGNORE_INDEX, reduction="none")
        token_losses.append(losses[targets != IGNORE_INDEX])
        if mode == "step_jepa":
            if pairs_per_chat is not None:
                pairs = pairs_per_chat[number]
            else:
                pairs = [1] if len(steps_by_hand(messages)) >= 2 else []
            for p in pairs:
                view_a, view_b = pair_views(model, chat, hidden, p, predictor_ids)
                views_a.append(view_a)
                views_b.append(view_b)
        elif mode == "llm_jepa":
            user = encode_view(tokenizer, messages[1], MAX_LENGTH)
            assistant = encode_view(tokenizer, messages[2], MAX_LENGTH)
            cut = user.last_content_index + 1
            user_hidden, _ = hidden_and_logits(model, user.input_ids[:cut] + predictor_ids + user.input_ids[cut:])
            views_a.append(user_hidden[cut + len(predictor_ids) - 1])
            assistant_hidden, _ = hidden_and_logits(model, assistant.input_ids)
            views_b.append(assistant_hidden[assistant.last_content_index])
    lm = torch.cat(token_losses).mean()
    if not views_a:
        return gamma * lm, lm, None, None
    view_a, view_b = torch.stack(views_a), torch.stack(views_b)
    if stop_grad:
        view_b = view_b.detach()
    return gamma * lm + lbd * jepa_loss(view_a, view_b, loss_kind), lm, view_a, view_b


LOADED: dict[tuple[str, int], tuple] = {}  # (model dir, predictors) -> model, tokenizer, predictor ids, RNG state


def setup(model_dir, num_predictors, lora=False):
    """A fresh copy of the tiny model in ``model_dir`` resized for ``num_predictors`` predictor tokens (with a LoRA
    adapter of non-zero B if ``lora``), its tokenizer and the predictor ids. Read from disk once per session and
    (dir, predictors): each call copies the model and tokenizer read and restores the RNG state after the resize,
    so every call gets what a fresh read gives."""
    key = (str(model_dir), num_predictors)
    if key not in LOADED:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        predictor_ids = add_predictor_tokens(tokenizer, num_predictors) if num_predictors else []
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        torch.manual_seed(0)
        resize_for_tokenizer(model, tokenizer)
        LOADED[key] = model, tokenizer, predictor_ids, torch.get_rng_state()
    model, tokenizer, predictor_ids, rng_state = LOADED[key]
    model, tokenizer = copy.deepcopy(model), copy.deepcopy(tokenizer)
    torch.set_rng_state(rng_state)
    if lora:
        model = apply_lora(model, 4)
        # Non-zero LoRA B so the adapter changes the function and its gradients are not trivially equal.
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    return model, tokenizer, list(predictor_ids)


def batch_chats(tiny_chats):
    """Four chats; the last one has a single step, so Step-JEPA trains it with LM only."""
    single = copy.deepcopy(tiny_chats[3])
    single["messages"][2]["content"] = single["messages"][2]["content"].replace("\n\n", " ")
    return [row["messages"] for row in tiny_chats[:3]] + [single["messages"]]


def grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad()
    return grads


def check_against_oracle(model, tokenizer, chats, mode, predictor_ids, loss_kind, stop_grad=False,
                         fill_padding=True):
    objective = Objective(mode=mode, loss=loss_kind, lbd=0.7, gamma=1.3, target_stop_grad=stop_grad)
    rows = [pack_chat(tokenizer, m, RowSettings(mode, predictor_ids, None, MAX_LENGTH)) for m in chats]
    batch = PackedCollator(tokenizer.pad_token_id or 0, fill_padding=fill_padding)(rows)
    packed = compute_objective(model, batch, objective)
    packed.loss.backward()
    packed_grads = grads(model)

    loss, lm, view_a, view_b = oracle(model, tokenizer, chats, mode, predictor_ids, loss_kind, stop_grad=stop_grad)
    loss.backward()
    oracle_grads = grads(model)

    assert_matches_oracle(packed, (loss, lm, view_a, view_b), mode, 3 if mode == "step_jepa" else 4,
                          packed_grads, oracle_grads)


def assert_matches_oracle(packed, expected, mode, view_count=None, packed_grads=None, oracle_grads=None):
    """The packed pass's LM loss, loss and views (``view_count`` of them, if given) equal the oracle's ``expected``
    ``(loss, lm, view_a, view_b)``; regular has no JEPA loss; with the gradients, every parameter's too."""
    loss, lm, view_a, view_b = expected
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed.lm_loss, lm, **tol)
    torch.testing.assert_close(packed.loss, loss, **tol)
    if mode == "regular":
        assert packed.jepa_loss is None
    else:
        if view_count is not None:
            assert packed.view_a.shape[0] == view_count
        torch.testing.assert_close(packed.view_a, view_a, **tol)
        torch.testing.assert_close(packed.view_b, view_b, **tol)
    if oracle_grads is not None:
        assert packed_grads.keys() == oracle_grads.keys() and packed_grads
        for name in oracle_grads:
            torch.testing.assert_close(packed_grads[name], oracle_grads[name], **tol, msg=lambda m: f"{name}: {m}")


# The packed layout differs by mode and by predictor count (none: view_a is the chat's own hidden state); the loss
# kind only changes the function of the views (tests/core/test_losses.py works each out by hand). The fast tier
# runs every mode and predictor count on both families, each JEPA mode with three of the losses (cosine is in the
# other oracle cases below); the other 36 combinations are in the slow tier.
FAST_CASES = {("regular", 0, "cosine"), ("llm_jepa", 0, "l2"), ("llm_jepa", 1, "mse"), ("llm_jepa", 2, "infonce"),
              ("step_jepa", 0, "infonce"), ("step_jepa", 1, "l2"), ("step_jepa", 2, "mse")}
CASES = [
    pytest.param(family, mode, k, loss, marks=() if (mode, k, loss) in FAST_CASES else SLOW,
                 id=f"{family}-{mode}-{k}-{loss}")
    for family in FAMILIES
    for mode, k, loss in [("regular", 0, "cosine")] + [
        (mode, k, loss) for mode in ("llm_jepa", "step_jepa") for k in (0, 1, 2) for loss in JEPA_LOSSES]
]


@pytest.mark.parametrize("family,mode,num_predictors,loss_kind", CASES)
def test_packed_pass_matches_oracle(tiny_model_dirs, tiny_chats, family, mode, num_predictors, loss_kind):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], num_predictors)
    check_against_oracle(model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, loss_kind)


@pytest.mark.parametrize("num_predictors", [0, 2])
def test_step_copies_in_other_rows_match_oracle(tiny_model_dir, tiny_chats, num_predictors):
    """Conversations of 4 different lengths: the longer rows' step copies move into the shorter rows' padding."""
    model, tokenizer, predictor_ids = setup(tiny_model_dir, num_predictors)
    chats = batch_chats(tiny_chats)
    chats = [[{**m, "content": m["content"] + " Think." * (6 * i)} if m["role"] == "user" else m for m in chat]
             for i, chat in enumerate(chats)]
    rows = [pack_chat(tokenizer, m, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH)) for m in chats]
    batch = PackedCollator(tokenizer.pad_token_id or 0)(rows)
    assert (batch["pair_b_row"] != batch["pair_row"]).any()
    check_against_oracle(model, tokenizer, chats, "step_jepa", predictor_ids, "cosine")


@pytest.mark.parametrize("mode", ["llm_jepa", "step_jepa"])
def test_unfilled_layout_matches_oracle(tiny_model_dir, tiny_chats, mode):
    """Every row's blocks after the longest conversation (what --step_pairs random trains on)."""
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 2)
    check_against_oracle(model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, "cosine", fill_padding=False)


@pytest.mark.parametrize("mode", ["llm_jepa", "step_jepa"])
def test_packed_pass_matches_oracle_with_lora(tiny_model_dir, tiny_chats, mode):
    model, tokenizer, predictor_ids = setup(tiny_model_dir, 2, lora=True)
    check_against_oracle(model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, "cosine")


def test_lm_only_step_drops_view_blocks(tiny_model_dirs, tiny_chats):
    """use_jepa=False gives the LM loss of the plain conversation, with no JEPA term."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["gpt2"], 2)
    chats = batch_chats(tiny_chats)
    rows = [pack_chat(tokenizer, m, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH)) for m in chats]
    batch = PackedCollator(tokenizer.pad_token_id or 0)(rows)
    out = compute_objective(model, batch, Objective(mode="step_jepa", lbd=0.7, gamma=1.3), use_jepa=False)
    _, lm, _, _ = oracle(model, tokenizer, chats, "regular", [], "cosine")
    assert out.jepa_loss is None
    torch.testing.assert_close(out.lm_loss, lm, rtol=1e-4, atol=1e-5)


# --- several pairs per row (--step_pairs all | random) and the stop-gradient target --------------------------------


def every_pair_by_hand(chats) -> list[list[int]]:
    """Every step -> next step pair of each chat, from its text: a chat of n steps has pairs 1..n-1."""
    return [list(range(1, len(steps_by_hand(messages)))) for messages in chats]


def drawn_pairs(model, tokenizer, chats, predictor_ids, packed) -> list[list[int]]:
    """Which pair of each chat the packed pass trained with ``--step_pairs random``, found without the code's
    draw: the oracle's separate-pass views of every candidate pair (:func:`every_pair_by_hand`), of which
    exactly one must equal the packed pass's view for that chat, in row order."""
    chosen, row = [], 0
    with torch.no_grad():
        for messages, candidates in zip(chats, every_pair_by_hand(chats)):
            chat = encode_chat(tokenizer, messages, MAX_LENGTH)
            hidden = hidden_and_logits(model, chat.input_ids)[0]
            matches = []
            for number in candidates:
                view_a, view_b = pair_views(model, chat, hidden, number, predictor_ids)
                if (torch.allclose(packed.view_a[row], view_a, rtol=1e-4, atol=1e-5)
                        and torch.allclose(packed.view_b[row], view_b, rtol=1e-4, atol=1e-5)):
                    matches.append(number)
            if candidates:
                assert len(matches) == 1, f"chat {len(chosen)}: packed view {row} matches pairs {matches}"
                row += 1
            chosen.append(matches)
    assert row == len(packed.view_a)  # no pair beyond one per chat with steps to pair
    return chosen


def packed_pairs(model, tokenizer, chats, step_pairs, predictor_ids, objective, seed, step):
    """The trainer's path: rows with every pair; for random one drawn per example, the others' blocks removed."""
    rows, _ = build_rows(tokenizer, chats, RowSettings("step_jepa", predictor_ids, None, MAX_LENGTH, step_pairs))
    pad = tokenizer.pad_token_id or 0
    batch = PackedCollator(pad, fill_padding=step_pairs != "random")(rows)
    if step_pairs == "random":
        batch = select_pairs(batch, draw_one_pair_per_row(batch, seed, step), pad)
    return compute_objective(model, batch, objective)


def kept_pair_per_example(batch, keep) -> dict[int, int]:
    """``{example index: the kept pair's number within its row (1-based)}`` for a ``keep`` mask over the pairs."""
    kept = {}
    for pair in keep.nonzero().flatten().tolist():
        row = int(batch["pair_row"][pair])
        first = int((batch["pair_row"] == row).nonzero()[0])
        kept[int(batch["example_index"][row])] = pair - first + 1
    return kept


def test_the_random_draw_is_uniform_and_follows_the_example(tiny_model_dirs, tiny_chats):
    """The draw that drawn_pairs reads off the packed views, checked on its own over 600 steps: one pair per chat,
    each of a chat's pairs drawn about equally often (a 3-pair chat: 200 expected, binomial sd
    sqrt(600 * 1/3 * 2/3) = 11.5, so 140..260 is over 5 sd), and a chat draws the same pair whatever row it sits
    in (the draw follows its example index)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["gpt2"])
    chats = [row["messages"] for row in tiny_chats[:6]]
    rows, _ = build_rows(tokenizer, chats, RowSettings("step_jepa", [], None, MAX_LENGTH, "all"))
    forward = PackedCollator(0, fill_padding=False)(rows)
    backward = PackedCollator(0, fill_padding=False)(rows[::-1])
    counts = [[0] * len(steps_by_hand(messages)) for messages in chats]  # counts[chat][pair number]
    for step in range(600):
        kept = kept_pair_per_example(forward, draw_one_pair_per_row(forward, 5, step))
        assert kept == kept_pair_per_example(backward, draw_one_pair_per_row(backward, 5, step))
        assert sorted(kept) == list(range(len(chats)))
        for example, number in kept.items():
            counts[example][number] += 1
    for example, by_number in enumerate(counts):
        expected = 600 / (len(by_number) - 1)  # n steps: n - 1 pairs, numbered 1..n-1
        assert by_number[0] == 0 and all(abs(c - expected) < 60 for c in by_number[1:]), (example, by_number)


# Pair selection depends on --step_pairs, the predictors (view_a's own pass or the chat's) and the model family
# (its tokenizer cuts the steps); the loss kind and the stop-gradient act after it (their own oracle cases are
# test_packed_pass_matches_oracle and test_stop_grad_target_matches_the_detached_oracle). The fast tier runs each
# --step_pairs with and without predictors on both families, every loss and both stop-gradient settings among
# them; the other 88 combinations are in the slow tier.
FAST_PAIR_CASES = {("all", 0, "l2", False), ("all", 2, "infonce", True), ("random", 1, "mse", True),
                   ("random", 0, "cosine", False)}
PAIR_CASES = [
    pytest.param(family, pairs, k, loss, stop, marks=() if (pairs, k, loss, stop) in FAST_PAIR_CASES else SLOW,
                 id=f"{family}-{pairs}-{k}-{loss}-{stop}")
    for family in FAMILIES for pairs in ("all", "random") for k in (0, 1, 2) for loss in JEPA_LOSSES
    for stop in (False, True)
]


@pytest.mark.parametrize("family,step_pairs,num_predictors,loss_kind,stop_grad", PAIR_CASES)
def test_every_pair_matches_the_multipass_oracle(tiny_model_dirs, tiny_chats, family, step_pairs, num_predictors,
                                                 loss_kind, stop_grad):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], num_predictors)
    chats = batch_chats(tiny_chats)
    # Three chats of 3 or 4 steps (2-3 pairs each), the fourth a single step (LM only), read off the text.
    steps = [len(steps_by_hand(messages)) for messages in chats]
    assert all(n in (3, 4) for n in steps[:3]) and steps[3] == 1
    # The tokenizer found the same steps as the blank lines do.
    assert [len(encode_chat(tokenizer, m, MAX_LENGTH).step_spans) for m in chats] == steps
    objective = Objective(mode="step_jepa", loss=loss_kind, lbd=0.7, gamma=1.3, target_stop_grad=stop_grad)
    packed = packed_pairs(model, tokenizer, chats, step_pairs, predictor_ids, objective, seed=5, step=3)
    packed.loss.backward()
    packed_grads = grads(model)

    if step_pairs == "all":
        pairs = every_pair_by_hand(chats)
        assert pairs[3] == [] and sum(map(len, pairs)) == sum(steps) - 4
    else:  # one pair of each chat with two steps or more, whichever the draw chose
        pairs = drawn_pairs(model, tokenizer, chats, predictor_ids, packed)
        assert list(map(len, pairs)) == [1, 1, 1, 0]
    loss, lm, view_a, view_b = oracle(model, tokenizer, chats, "step_jepa", predictor_ids, loss_kind,
                                      stop_grad=stop_grad, pairs_per_chat=pairs)
    loss.backward()
    oracle_grads = grads(model)

    assert packed.view_a.shape[0] == sum(map(len, pairs))
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed.lm_loss, lm, **tol)
    torch.testing.assert_close(packed.view_a, view_a, **tol)
    torch.testing.assert_close(packed.view_b, view_b, **tol)
    torch.testing.assert_close(packed.jepa_loss, jepa_loss(view_a, view_b, loss_kind), **tol)
    torch.testing.assert_close(packed.loss, loss, **tol)
    assert packed_grads.keys() == oracle_grads.keys() and packed_grads
    for name in oracle_grads:
        torch.testing.assert_close(packed_grads[name], oracle_grads[name], **tol, msg=lambda m: f"{name}: {m}")


# The detached target is one code path for every mode, loss and family: the fast tier runs it for each mode, with
# InfoNCE (whose negatives are targets too) on one family and L2 on the other; the other 12 cases are slow.
FAST_STOP_CASES = {("llama", "step_jepa", "infonce"), ("gpt2", "llm_jepa", "l2")}
STOP_CASES = [
    pytest.param(family, mode, loss, marks=() if (family, mode, loss) in FAST_STOP_CASES else SLOW,
                 id=f"{family}-{mode}-{loss}")
    for family in FAMILIES for mode in ("llm_jepa", "step_jepa") for loss in JEPA_LOSSES
]


@pytest.mark.parametrize("family,mode,loss_kind", STOP_CASES)
def test_stop_grad_target_matches_the_detached_oracle(tiny_model_dirs, tiny_chats, family, mode, loss_kind):
    model, tokenizer, predictor_ids = setup(tiny_model_dirs[family], 1)
    check_against_oracle(model, tokenizer, batch_chats(tiny_chats), mode, predictor_ids, loss_kind, stop_grad=True)


def test_stop_grad_changes_the_gradients(tiny_model_dirs, tiny_chats):
    """The detached target is a different gradient, so the stop-gradient cases above can tell the two apart."""
    model, tokenizer, predictor_ids = setup(tiny_model_dirs["llama"], 1)
    chats = batch_chats(tiny_chats)
    by_stop = {}
    for stop in (False, True):
        oracle(model, tokenizer, chats, "step_jepa", predictor_ids, "cosine", stop_grad=stop)[0].backward()
        by_stop[stop] = grads(model)
    assert any(not torch.allclose(by_stop[False][n], by_stop[True][n], atol=1e-6) for n in by_stop[False])

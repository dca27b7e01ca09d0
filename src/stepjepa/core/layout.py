"""The packed single-pass layout: conversation and view blocks in one row, their positions and attention mask.

A packed row is ``[conversation][view blocks]``. Token ``i`` may attend to token ``j`` iff ``j <= i``,
``j >= doc_start[i]`` (nothing before its own conversation) and either ``j >= block_start[i]`` (causal inside its
own block) or ``j < context_end[i]`` (a prefix of the conversation it is allowed to see). Conversation tokens have
``block_start = 0``: the plain causal mask. With ``--packing`` a batch row holds several examples
(:func:`join_rows`): their conversations side by side, then their view blocks, each token bounded below by
``doc_start``; with one example per row ``doc_start`` is 0 for all but the isolated blocks, where it changes nothing.
A row holds any number of JEPA pairs (Step-JEPA ``--step_pairs all``: one per step that has a successor); each
pair's blocks are contiguous and never see another pair's. Everything here is pure: lists and tensors in, lists
and tensors out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Sequence

import torch

from stepjepa.core.errors import UsageError
from stepjepa.core.tokenization import IGNORE_INDEX, EncodedChat, EncodedView
from stepjepa.core.view_rows import VIEW_ROWS, Placement, appended_placement, own_row_placement

STEP_PAIRS = ("first", "all", "random")  # Step-JEPA: step 1 -> 2 only, every step -> the next, one drawn per step
NO_VIEW = -1


def _block(ids: list[int], start: int, positions: list[int], context_end: int, region: str) -> dict[str, list]:
    return {
        "input_ids": list(ids),
        "labels": [IGNORE_INDEX] * len(ids),
        "position_ids": positions,
        "block_start": [start] * len(ids),
        "context_end": [context_end] * len(ids),
        "regions": [region] * len(ids),
    }


def conversation_regions(chat: EncodedChat) -> list[str]:
    """A region name per conversation token: prompt, step_1, step_2, ..., end_of_turn."""
    regions = ["prompt"] * chat.prompt_length + ["assistant"] * (len(chat.input_ids) - chat.prompt_length)
    for number, (start, end) in enumerate(chat.step_spans, start=1):
        regions[start:end] = [f"step_{number}"] * (end - start)
    last_label = max((i for i, label in enumerate(chat.labels) if label != IGNORE_INDEX), default=-1)
    if last_label >= 0 and regions[last_label] == "assistant":
        regions[last_label] = "end_of_turn"
    return regions


def _packed(chat: EncodedChat, blocks: list[dict[str, list]], pairs: list[tuple[int, int]],
            pair_spans: list[tuple[int, int]]) -> dict[str, Any]:
    """The row: conversation, then ``blocks``; ``pairs`` are (view_a, view_b) indices, ``pair_spans`` each pair's
    ``[start, end)`` columns of blocks. ``view_a_index``/``view_b_index`` are the first pair (NO_VIEW: LM only).
    """
    length = len(chat.input_ids)
    row = {
        "input_ids": list(chat.input_ids),
        "labels": list(chat.labels),
        "position_ids": list(range(length)),
        "block_start": [0] * length,
        "context_end": [0] * length,
        "regions": conversation_regions(chat),
    }
    for block in blocks:
        for key, values in block.items():
            row[key].extend(values)
    view_a, view_b = pairs[0] if pairs else (NO_VIEW, NO_VIEW)
    row.update(conversation_length=length, view_a_index=view_a, view_b_index=view_b, view_pairs=list(pairs),
               pair_spans=list(pair_spans))
    return row


def pack_regular(chat: EncodedChat) -> dict[str, Any]:
    """The conversation alone: LM loss only."""
    return _packed(chat, [], [], [])


def step_pair_numbers(chat: EncodedChat, step_pairs: str) -> list[int]:
    """The pairs a row holds, numbered by their context step: pair ``p`` predicts step ``p + 1`` from step ``p``.

    ``first``: pair 1 only; ``all`` and ``random``: every step whose successor is whole (``random`` keeps one of
    them per training step, see :func:`draw_one_pair_per_row`). Steps cut by ``--max_length`` are already gone
    from ``chat.step_spans``, so a cut drops exactly the pairs it breaks.
    """
    if step_pairs not in STEP_PAIRS:
        raise UsageError(f"unknown step_pairs {step_pairs!r}; expected one of {STEP_PAIRS}")
    every = list(range(1, len(chat.step_spans)))
    return every[:1] if step_pairs == "first" else every


def pack_step_jepa(chat: EncodedChat, predictor_ids: list[int], pairs: Sequence[int] = (1,)) -> dict[str, Any]:
    """Conversation + per pair ``p``: K predictors after step p (they see system..step p) + an isolated copy of
    step p+1. The default, pair 1 alone, is the options guide's Step-JEPA.

    view_a: the pair's last predictor (K > 0) or step p's last token (K = 0, identity predictor);
    view_b: the last token of the step p+1 copy. Without two whole steps: LM only.
    """
    pairs = [p for p in pairs if 1 <= p < len(chat.step_spans)]
    if not pairs:
        return pack_regular(chat)
    column = len(chat.input_ids)
    k = len(predictor_ids)
    blocks, views, spans = [], [], []
    for p in pairs:
        (_, context_end), (next_start, next_end) = chat.step_spans[p - 1], chat.step_spans[p]
        # Predictors continue step p's positions, as if inserted right after it.
        predictors = _block(predictor_ids, column, list(range(context_end, context_end + k)), context_end,
                            f"predictor p{p}")
        target = chat.input_ids[next_start:next_end]
        copy = _block(target, column + k, list(range(len(target))), 0, f"step_{p + 1}_copy p{p}")
        view_a = column + k - 1 if k else context_end - 1
        views.append((view_a, column + k + len(target) - 1))
        spans.append((column, column + k + len(target)))
        blocks += [predictors, copy]
        column += k + len(target)
    return _packed(chat, blocks, views, spans)


def _view_index(view_length: int, last_content_index: int, num_predictors: int, last_token: int | None) -> int:
    """Index of a view's embedding: its last content token (``last_token`` None) or ``len + last_token``."""
    if last_token is None:
        return last_content_index + num_predictors if last_content_index >= 0 else NO_VIEW
    index = view_length + last_token
    return index if 0 <= index < view_length else NO_VIEW


def pack_llm_jepa(
    chat: EncodedChat,
    user_view: EncodedView,
    assistant_view: EncodedView,
    predictor_ids: list[int],
    last_token: int | None,
) -> dict[str, Any]:
    """Conversation + the user message alone (K predictors after its content) + the assistant message alone.

    Each view block sees only itself and starts at position 0, as in its own forward pass.
    """
    length = len(chat.input_ids)
    cut = user_view.last_content_index + 1 if user_view.last_content_index >= 0 else len(user_view.input_ids)
    user_ids = user_view.input_ids[:cut] + list(predictor_ids) + user_view.input_ids[cut:]
    user = _block(user_ids, length, list(range(len(user_ids))), 0, "user_view")
    user["regions"][cut : cut + len(predictor_ids)] = ["predictor"] * len(predictor_ids)
    assistant = _block(
        assistant_view.input_ids, length + len(user_ids), list(range(len(assistant_view.input_ids))), 0, "assistant_view"
    )
    view_a = _view_index(len(user_ids), user_view.last_content_index, len(predictor_ids), last_token)
    view_b = _view_index(len(assistant_view.input_ids), assistant_view.last_content_index, 0, last_token)
    if view_a == NO_VIEW or view_b == NO_VIEW:
        return pack_regular(chat)
    end = length + len(user_ids) + len(assistant_view.input_ids)
    return _packed(chat, [user, assistant], [(length + view_a, length + len(user_ids) + view_b)], [(length, end)])


def may_attend(query: torch.Tensor, key: torch.Tensor, block_start: torch.Tensor, context_end: torch.Tensor,
               doc_start: torch.Tensor) -> torch.Tensor:
    """The packed rule on broadcastable tensors of query and key columns and the query's block start, context
    end and document start: ``key <= query and key >= doc_start and (key >= block_start or key < context_end)``.
    The dense mask and FlexAttention's ``mask_mod`` both call it."""
    return (key <= query) & (key >= doc_start) & ((key >= block_start) | (key < context_end))


def allowed_attention(block_start: torch.Tensor, context_end: torch.Tensor,
                      doc_start: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``(B, T, T)``: may query ``i`` attend to key ``j``; from ``(B, T)`` block starts, context ends and
    document starts (None: 0, one example per row)."""
    index = torch.arange(block_start.shape[-1], device=block_start.device)
    lower = torch.zeros_like(block_start) if doc_start is None else doc_start
    return may_attend(index[:, None], index[None, :], block_start[:, :, None], context_end[:, :, None],
                      lower[:, :, None])


def join_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several examples' packed rows as one row (``--packing``): their conversations side by side from column 0,
    then each example's view blocks, in example order. Nothing of an example moves relative to itself, so each
    computes as alone: positions stay its own (they restart per conversation), and ``doc_start``, the first
    column a token may see at all, is its conversation's first column (for a block that sees only itself, its
    own first column, so the block may move to any row). A later conversation's first label is dropped: in its
    own pass no token predicts it. ``pair_examples``: each pair's example (its place in ``rows``);
    ``example_view_a``/``example_view_b``/``example_indices``: one per example. One row gives itself, plus these.
    """
    width = sum(row["conversation_length"] for row in rows)
    joined: dict[str, Any] = {key: [] for key in TOKEN_KEYS}
    with_regions = all("regions" in row for row in rows)
    if with_regions:
        joined["regions"] = []
    starts, block_columns, column = [], [], width
    for row in rows:  # each example's first conversation column and first block column
        starts.append(len(joined["input_ids"]))
        block_columns.append(column)
        column += len(row["input_ids"]) - row["conversation_length"]
        length = row["conversation_length"]
        joined["input_ids"] += row["input_ids"][:length]
        joined["labels"] += row["labels"][:length]
        if starts[-1]:
            joined["labels"][starts[-1]] = IGNORE_INDEX
        joined["position_ids"] += row["position_ids"][:length]
        joined["block_start"] += [starts[-1]] * length
        joined["context_end"] += [0] * length
        joined["doc_start"] += [starts[-1]] * length
        if with_regions:
            joined["regions"] += row["regions"][:length]
    joined.update(conversation_length=width, view_pairs=[], pair_spans=[], pair_examples=[], example_view_a=[],
                  example_view_b=[])
    for example, (row, start, blocks) in enumerate(zip(rows, starts, block_columns)):
        length = row["conversation_length"]

        def moved(index: int) -> int:
            return start + index if index < length else blocks + index - length

        for key in ("input_ids", "labels", "position_ids"):
            joined[key] += row[key][length:]
        for block_start, context_end in zip(row["block_start"][length:], row["context_end"][length:]):
            joined["block_start"].append(moved(block_start))
            joined["context_end"].append(start + context_end if context_end else 0)
            joined["doc_start"].append(start if context_end else moved(block_start))
        if with_regions:
            joined["regions"] += row["regions"][length:]
        joined["view_pairs"] += [(moved(a), moved(b)) for a, b in row["view_pairs"]]
        joined["pair_spans"] += [(moved(first), moved(end - 1) + 1) for first, end in row["pair_spans"]]
        joined["pair_examples"] += [example] * len(row["view_pairs"])
        for key in ("view_a", "view_b"):
            index = row[f"{key}_index"]
            joined[f"example_{key}"].append(NO_VIEW if index == NO_VIEW else moved(index))
    if all("example_index" in row for row in rows):
        joined["example_indices"] = [row["example_index"] for row in rows]
    return joined


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, T, T)`` booleans -> ``(B, 1, T, T)`` additive mask: 0 where allowed, -inf elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, float("-inf"))[:, None]


@dataclass
class PackedCollator:
    """Pads packed rows into a batch: conversations left-aligned in rows of their own, view blocks placed where
    they cost least (:mod:`stepjepa.core.view_rows`).

    Each item is one example's packed row, or a pack (a list of them, ``--packing``) that shares one batch row
    (:func:`join_rows`). Aligning the conversation region lets the LM head run on it alone; padding tokens see
    only themselves. Blocks that see their conversation (Step-JEPA's predictors) follow it in its row; blocks that
    see only themselves go into the batch's padding (``fill_padding``, longest first), or, ``view_rows``, into
    rows of their own after the B conversation rows when every block of the batch is isolated (LLM-JEPA):
    ``auto`` whenever that costs less (:func:`stepjepa.core.view_rows.layout_cost`), ``always``, or ``never``.
    Without ``fill_padding`` every row's blocks follow the batch's longest conversation region, as
    ``select_pairs`` needs. ``dense_mask``: add the ``(B, 1, T, T)`` additive ``attention_mask`` (sdpa, eager);
    without it the model builds its mask from ``block_start``, ``context_end`` and ``doc_start`` ``(B, T)`` on the
    device (flex_attention). Every JEPA pair of the batch, in example order: ``pair_row`` (its example's row),
    ``pair_example`` (its example's place among the batch's N examples), ``pair_a_row``, ``pair_b_row`` (the rows
    holding view_a and view_b), ``pair_view_a``, ``pair_view_b`` (their columns) ``(P,)`` and ``pair_span``
    ``(P, 2)`` (its blocks' columns when they lie together in its example's row, else ``(0, 0)``);
    ``view_a_index``/``view_b_index`` ``(N,)`` are the columns of each example's first pair (NO_VIEW: the example
    trains LM only), ``example_index`` ``(N,)`` each example's index in its data set when the rows carry it. ``pad_to_multiple_of``: the batch width is
    padded up to a multiple of it (compiled kernels on CUDA are reused across batches of nearby widths).

    >>> batch = PackedCollator(pad_token_id=0)([pack_regular(EncodedChat([5, 6, 7], [-100, 6, 7], 1, [], False))])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].shape
    ([[5, 6, 7]], torch.Size([1, 1, 3, 3]))
    """

    pad_token_id: int
    dense_mask: bool = True
    view_rows: str = "auto"
    fill_padding: bool = True
    pad_to_multiple_of: int | None = None

    def __call__(self, items: list[dict[str, Any] | list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        if self.view_rows not in VIEW_ROWS:
            raise UsageError(f"unknown view_rows {self.view_rows!r}; expected one of {VIEW_ROWS}")
        rows = [join_rows(item if isinstance(item, list) else [item]) for item in items]
        width = max(row["conversation_length"] for row in rows)
        placement, total = appended_placement(rows, width, self.fill_padding)
        own_rows = own_row_placement(rows, width, self.view_rows, total) if self.view_rows != "never" else None
        count = len(rows)
        if own_rows is not None:
            placement, count, total = own_rows
        if self.pad_to_multiple_of:
            total = -(-total // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = self._assemble(rows, placement, count, total)
        if self.dense_mask:
            batch["attention_mask"] = additive_mask(allowed_attention(batch["block_start"], batch["context_end"],
                                                                      batch["doc_start"]))
        for key in ("pair_row", "pair_example", "pair_a_row", "pair_b_row", "pair_view_a", "pair_view_b",
                    "view_a_index", "view_b_index"):
            batch[key] = torch.tensor(batch[key], dtype=torch.long)
        batch["pair_span"] = torch.tensor(batch["pair_span"], dtype=torch.long).reshape(-1, 2)
        if all("example_indices" in row for row in rows):
            batch["example_index"] = torch.tensor([i for row in rows for i in row["example_indices"]],
                                                  dtype=torch.long)
        batch["conversation_width"] = torch.tensor(width, dtype=torch.long)
        batch["conversation_rows"] = torch.tensor(len(rows), dtype=torch.long)
        batch["num_tokens"] = torch.tensor(sum(row["conversation_length"] for row in rows), dtype=torch.long)
        return batch

    def _empty(self, count: int, total: int) -> dict[str, Any]:
        """``count`` rows of ``total`` padding tokens (each sees only itself) and no pairs yet."""
        return {
            **padding_columns(count, total, self.pad_token_id),
            **{key: [] for key in ("view_a_index", "view_b_index", *PAIR_KEYS)},
        }

    @staticmethod
    def _place(batch: dict[str, Any], row: dict[str, Any], b: int, into: int, start: int, end: int) -> None:
        """Copy ``row``'s columns ``[start, end)`` to batch row ``b`` from column ``into``; their block and document
        starts move with them (a start at ``start`` or later shifts by ``into - start``)."""
        for key in ("input_ids", "labels", "position_ids", "context_end"):
            batch[key][b, into : into + end - start] = torch.tensor(row[key][start:end], dtype=torch.long)
        for key in ("block_start", "doc_start"):
            starts = torch.tensor(row[key][start:end], dtype=torch.long)
            batch[key][b, into : into + end - start] = torch.where(starts >= start, starts + into - start, starts)

    def _assemble(self, rows: list[dict[str, Any]], placement: Placement, count: int, total: int) -> dict[str, Any]:
        """``count`` rows of ``total`` columns: the B conversation regions from column 0 of rows 0..B-1, each view
        block where ``placement`` puts it, and every pair's rows and columns."""
        batch = self._empty(count, total)
        examples = 0  # examples in the rows before this one
        for b, row in enumerate(rows):
            self._place(batch, row, b, 0, 0, row["conversation_length"])
            for start, end, into_row, column in placement[b]:
                self._place(batch, row, into_row, column, start, end)

            def locate(index: int) -> tuple[int, int]:
                """A token's (batch row, column), from its column in the packed row."""
                if index < row["conversation_length"]:
                    return b, index
                start, _, into_row, column = next(block for block in placement[b] if block[0] <= index < block[1])
                return into_row, column + index - start

            for key in ("view_a", "view_b"):
                batch[f"{key}_index"] += [NO_VIEW if index == NO_VIEW else locate(index)[1]
                                          for index in row[f"example_{key}"]]
            for (a, v), (start, end), example in zip(row["view_pairs"], row["pair_spans"], row["pair_examples"]):
                (row_a, column_a), (row_b, column_b) = locate(a), locate(v)
                batch["pair_row"].append(b)
                batch["pair_example"].append(examples + example)
                batch["pair_a_row"].append(row_a)
                batch["pair_b_row"].append(row_b)
                batch["pair_view_a"].append(column_a)
                batch["pair_view_b"].append(column_b)
                # The span moves as one piece only when each of its blocks stays in row b, shifted alike.
                shifts = {(into_row, column - first) for first, _, into_row, column in placement[b]
                          if start <= first < end}
                together = len(shifts) == 1 and next(iter(shifts))[0] == b
                shift = next(iter(shifts))[1] if together else 0
                batch["pair_span"].append((start + shift, end + shift) if together else (0, 0))
            examples += len(row["example_view_a"])
        return batch


# The per-token columns of a packed row and of a batch, each with what a padding token holds there: the pad id,
# no label, position 0, a block of its own (its own column: it sees only itself), no context, document start 0.
PADDING = {"input_ids": "pad id", "labels": IGNORE_INDEX, "position_ids": 0, "block_start": "own column",
           "context_end": 0, "doc_start": 0}
TOKEN_KEYS = tuple(PADDING)
# A packed row's per-example columns beside its per-token ones, with their Arrow types (one value each), and its
# pair lists ((a, b) tuples); the tokenized-row cache derives its stored and expanded forms and its Arrow schema
# from these (stepjepa.data.cache).
EXAMPLE_COLUMNS = {"conversation_length": "int32", "view_a_index": "int32", "view_b_index": "int32",
                   "truncated": "bool", "num_steps": "int32", "example_index": "int64"}
PAIR_LIST_COLUMNS = ("view_pairs", "pair_spans")
PAIR_KEYS = ("pair_row", "pair_example", "pair_a_row", "pair_b_row", "pair_view_a", "pair_view_b", "pair_span")


def padding_columns(count: int, total: int, pad_token_id: int, device: torch.device | str | None = None
                    ) -> dict[str, torch.Tensor]:
    """Every column of :data:`PADDING` for ``count`` rows of ``total`` padding tokens, ``(count, total)`` each."""
    own_column = torch.arange(total, device=device).repeat(count, 1)
    return {key: own_column if value == "own column" else
            torch.full((count, total), pad_token_id if value == "pad id" else value, dtype=torch.long, device=device)
            for key, value in PADDING.items()}


def conversation_only(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its view blocks (an LM-only step): the leading conversation region, the regular batch's
    size. View blocks placed in a conversation's padding stay there, inert: no conversation token sees a column
    past its own, and nothing reads them."""
    width, rows = int(batch["conversation_width"]), int(batch["conversation_rows"])
    sliced = dict(batch)
    for key in TOKEN_KEYS:
        sliced[key] = batch[key][:rows, :width]
    if "attention_mask" in batch:
        sliced["attention_mask"] = batch["attention_mask"][:rows, :, :width, :width]
    sliced["view_a_index"] = torch.full_like(batch["view_a_index"], NO_VIEW)
    sliced["view_b_index"] = torch.full_like(batch["view_b_index"], NO_VIEW)
    for key in PAIR_KEYS:
        sliced[key] = batch[key][:0]
    return sliced


def select_pairs(batch: dict[str, torch.Tensor], keep: torch.Tensor, pad_token_id: int) -> dict[str, torch.Tensor]:
    """The batch with only the pairs where ``keep (P,)`` is true; the other pairs' blocks are removed and each
    row's remaining blocks close up behind the conversations, exactly as if the rows had been packed with the
    kept pairs alone (so the cost is that of the kept blocks). Packed rows (several examples a row) too.
    """
    width = int(batch["conversation_width"])
    rows, total = batch["input_ids"].shape
    # Each pair's blocks must lie together past the conversation width, which is kept whole below.
    if rows > int(batch["conversation_rows"]) or not bool((batch["pair_span"][:, 0] >= width).all()):
        raise UsageError("select_pairs needs every pair's blocks together in its example's row "
                         "(PackedCollator(fill_padding=False, view_rows='never'))")
    kept_pairs = keep.to(torch.bool).nonzero().flatten().tolist()
    # Host copies: no sync per pair.
    spans, pair_rows, pair_examples = (batch[key].tolist() for key in ("pair_span", "pair_row", "pair_example"))
    columns = [list(range(width)) for _ in range(rows)]
    for p in kept_pairs:
        columns[pair_rows[p]].extend(range(*spans[p]))
    new_total = max(len(c) for c in columns)
    device = batch["input_ids"].device
    selected = dict(batch)
    selected.update(padding_columns(rows, new_total, pad_token_id, device))
    new_column = torch.full((rows, total), NO_VIEW, dtype=torch.long, device=device)  # old column -> new column
    for b, kept in enumerate(columns):
        index = torch.tensor(kept, dtype=torch.long, device=device)
        new_column[b, index] = torch.arange(len(kept), device=device)
        for key in ("input_ids", "labels", "position_ids", "context_end"):
            selected[key][b, : len(kept)] = batch[key][b, index]
        # A kept token's block and document starts are its own block's first column (kept with it) or a column
        # of the conversation region (kept in place).
        for key in ("block_start", "doc_start"):
            selected[key][b, : len(kept)] = new_column[b, batch[key][b, index]]
    if "attention_mask" in batch:
        selected["attention_mask"] = additive_mask(
            allowed_attention(selected["block_start"], selected["context_end"], selected["doc_start"]),
            batch["attention_mask"].dtype)
    kept = torch.tensor(kept_pairs, dtype=torch.long, device=device)
    pair_row = batch["pair_row"][kept]
    selected["pair_row"] = selected["pair_a_row"] = selected["pair_b_row"] = pair_row
    selected["pair_example"] = batch["pair_example"][kept]
    selected["pair_view_a"] = new_column[pair_row, batch["pair_view_a"][kept]]
    selected["pair_view_b"] = new_column[pair_row, batch["pair_view_b"][kept]]
    starts = new_column[pair_row, batch["pair_span"][kept, 0]]
    lengths = batch["pair_span"][kept, 1] - batch["pair_span"][kept, 0]
    selected["pair_span"] = torch.stack([starts, starts + lengths], dim=1)
    first_kept = {}  # example -> position of its first kept pair
    for position, p in enumerate(kept_pairs):
        first_kept.setdefault(pair_examples[p], position)
    with_pairs = torch.tensor(list(first_kept), dtype=torch.long, device=device)
    firsts = torch.tensor(list(first_kept.values()), dtype=torch.long, device=device)
    for name, key in (("view_a_index", "pair_view_a"), ("view_b_index", "pair_view_b")):
        selected[name] = torch.full_like(batch[name], NO_VIEW)
        selected[name][with_pairs] = selected[key][firsts]
    return selected


def draw_one_pair_per_row(batch: dict[str, torch.Tensor], seed: int, step: int) -> torch.Tensor:
    """``(P,)`` booleans keeping one pair per example (per row unless packed), drawn uniformly from (seed, step,
    example index) only, so a resumed run draws what the uninterrupted one did (``--step_pairs random``).
    """
    keep = torch.zeros(len(batch["pair_row"]), dtype=torch.bool)
    first = 0
    for example_number, group in groupby(batch["pair_example"].tolist()):  # an example's pairs are consecutive
        count = len(list(group))
        example = int(batch["example_index"][example_number])
        keep[first + random.Random(f"{seed}:{step}:{example}").randrange(count)] = True
        first += count
    return keep


def render_layout(tokens: list[str], row: dict[str, Any], allowed: torch.Tensor) -> str:
    """A readable picture of one packed row: index, position, region, token, and its mask row (``#`` = may attend)."""
    lines = [f"{'idx':>4} {'pos':>4} {'region':<18} {'token':<16} mask"]
    for i, token in enumerate(tokens):
        marks = "".join("#" if allowed[i, j] else "." for j in range(len(tokens)))
        lines.append(f"{i:>4} {row['position_ids'][i]:>4} {row['regions'][i]:<18} {token!r:<16.16} {marks}")
    for number, (view_a, view_b) in enumerate(row["view_pairs"], start=1):
        lines.append(f"pair p{number}: view_a index {view_a}, view_b index {view_b}")
    if not row["view_pairs"]:
        lines.append("no JEPA pair: LM only")
    return "\n".join(lines)

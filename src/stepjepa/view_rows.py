"""LLM-JEPA's views in rows of their own: which blocks may move there, how they pack, and when that is cheaper.

A block that sees only itself (block start = its first column, context end 0) computes the same wherever it sits,
so :class:`stepjepa.layout.PackedCollator` may lift such blocks out of the conversation's row into extra rows.
"""

from __future__ import annotations

from typing import Any

VIEW_ROWS = ("auto", "always", "never")


def isolated_blocks(row: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The ``[start, end)`` columns of a row's view blocks when each sees only itself (context end 0) and they
    hold every view embedding, as LLM-JEPA's do; None otherwise (Step-JEPA: predictors see the conversation, and
    with K = 0 view_a is in it). Read from the row's own columns, so rows rebuilt from a cache qualify too."""
    length, starts, context = row["conversation_length"], row["block_start"], row["context_end"]
    if any(index < length for pair in row["view_pairs"] for index in pair):
        return None
    blocks, column = [], length
    while column < len(starts):
        end = column
        while end < len(starts) and starts[end] == starts[column]:
            end += 1
        if starts[column] != column or any(context[column:end]):
            return None
        blocks.append((column, end))
        column = end
    return blocks


# The row width at which a token's attention work equals its other work (projections, MLP), for the cost model.
ATTENTION_WIDTH = 1000


def layout_cost(rows: int, width: int) -> float:
    """A batch's relative compute: every padded token's projections and MLP, plus its attention over the row's
    width (the dense mask makes every query pay for every column)."""
    return rows * width * (1 + width / ATTENTION_WIDTH)


def view_row_bins(rows: list[dict[str, Any]], width: int,
                   when: str) -> tuple[list[list[tuple[int, int, int]]], int] | None:
    """Rows of their own for the isolated blocks, packed first-fit longest first, and their width: each bin
    lists ``(example, start, end)``; None when some example's views are not all isolated, or (``auto``) when
    appending costs no more."""
    per_row = [isolated_blocks(row) for row in rows]
    if any(blocks is None for blocks in per_row):
        return None
    blocks = [(b, start, end) for b, row_blocks in enumerate(per_row) for start, end in row_blocks]
    if not blocks:
        return None
    size = max(width, max(end - start for _, start, end in blocks))
    bins: list[list[tuple[int, int, int]]] = []
    room: list[int] = []
    for block in sorted(blocks, key=lambda block: block[1] - block[2]):  # longest first, stable
        length = block[2] - block[1]
        fits = next((i for i, free in enumerate(room) if free >= length), None)
        if fits is None:
            bins.append([])
            room.append(size)
            fits = len(bins) - 1
        bins[fits].append(block)
        room[fits] -= length
    if when == "always":
        return bins, size
    tail = max(len(row["input_ids"]) - row["conversation_length"] for row in rows)
    own = layout_cost(len(rows) + len(bins), size)
    return (bins, size) if own < layout_cost(len(rows), width + tail) else None

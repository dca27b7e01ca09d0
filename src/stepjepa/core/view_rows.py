"""Where a batch's view blocks go: after their conversation, in its padding, or in rows of their own.

A block that sees only itself (block start = its first column, context end 0) computes the same wherever it sits,
so :class:`stepjepa.core.layout.PackedCollator` may move it out of its conversation's row: into the padding of any row
of the batch (Step-JEPA's step copies, LLM-JEPA's views), or into extra rows (LLM-JEPA's views, when cheaper).
A block that sees its conversation (Step-JEPA's predictors) stays in its row, after the conversation.
"""

from __future__ import annotations

from typing import Any

VIEW_ROWS = ("auto", "always", "never")

# A placement: per example, ``(start, end, batch row, column)`` of each of its view blocks (``[start, end)`` its
# columns in the packed row).
Placement = list[list[tuple[int, int, int, int]]]


def view_blocks(row: dict[str, Any]) -> list[tuple[int, int, bool]]:
    """``(start, end, isolated)`` of each view block after a packed row's conversation, in order: a block is a
    run of equal block starts, isolated when it sees only itself. Read from the row's own columns, so rows
    rebuilt from a cache qualify too."""
    starts, context = row["block_start"], row["context_end"]
    blocks, column = [], row["conversation_length"]
    while column < len(starts):
        end = column
        while end < len(starts) and starts[end] == starts[column]:
            end += 1
        blocks.append((column, end, starts[column] == column and not any(context[column:end])))
        column = end
    return blocks


def isolated_blocks(row: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The ``[start, end)`` columns of a row's view blocks when each sees only itself and they hold every view
    embedding, as LLM-JEPA's do; None otherwise (Step-JEPA: predictors see the conversation, and with K = 0
    view_a is in it)."""
    if any(index < row["conversation_length"] for pair in row["view_pairs"] for index in pair):
        return None
    blocks = view_blocks(row)
    return None if not all(isolated for _, _, isolated in blocks) else [(start, end) for start, end, _ in blocks]


def appended_placement(rows: list[dict[str, Any]], width: int, fill_padding: bool = True) -> tuple[Placement, int]:
    """Every example's view blocks in the B conversation rows, and the batch's width (at least ``width``).

    ``fill_padding``: the blocks that see the conversation follow it at once, and the isolated blocks fill the
    rows' padding, longest first, each after the row that ends first (past ``width`` only where no row has room);
    on GSM8K batches this makes a Step-JEPA batch about 1.02x a regular one instead of 1.15x. Without it each
    row's blocks follow, in order, the batch's longest conversation (every pair's blocks contiguous in its own
    row, as :func:`stepjepa.core.layout.select_pairs` needs).
    """
    placement: Placement = [[] for _ in rows]
    ends, isolated = [], []
    for b, row in enumerate(rows):
        column = row["conversation_length"] if fill_padding else width
        for start, end, alone in view_blocks(row):
            if alone and fill_padding:
                isolated.append((b, start, end))
                continue
            placement[b].append((start, end, b, column))
            column += end - start
        ends.append(column)
    for b, start, end in sorted(isolated, key=lambda block: block[1] - block[2]):  # longest first, stable
        target = min(range(len(rows)), key=lambda r: (ends[r], r != b))  # the row ending first; ties: its own
        placement[b].append((start, end, target, ends[target]))
        ends[target] += end - start
    return placement, max([width, *ends])


# The row width at which a token's attention work equals its other work (projections, MLP), for the cost model.
ATTENTION_WIDTH = 1000


def layout_cost(rows: int, width: int) -> float:
    """A batch's relative compute: every padded token's projections and MLP, plus its attention over the row's
    width (the dense mask makes every query pay for every column)."""
    return rows * width * (1 + width / ATTENTION_WIDTH)


def own_row_placement(rows: list[dict[str, Any]], width: int, when: str,
                      appended_width: int) -> tuple[Placement, int, int] | None:
    """The isolated blocks in rows of their own after the B conversation rows, packed first-fit longest first:
    the placement, the number of rows and their width; None when some example's views are not all isolated,
    or (``auto``) when that costs no less than the appended layout, ``appended_width`` wide."""
    per_row = [isolated_blocks(row) for row in rows]
    if any(blocks is None for blocks in per_row):
        return None
    blocks = [(b, start, end) for b, row_blocks in enumerate(per_row) for start, end in row_blocks]
    if not blocks:
        return None
    size = max(width, max(end - start for _, start, end in blocks))
    placement: Placement = [[] for _ in rows]
    room: list[int] = []
    for b, start, end in sorted(blocks, key=lambda block: block[1] - block[2]):  # longest first, stable
        fits = next((i for i, free in enumerate(room) if free >= end - start), None)
        if fits is None:
            room.append(size)
            fits = len(room) - 1
        placement[b].append((start, end, len(rows) + fits, size - room[fits]))
        room[fits] -= end - start
    total_rows = len(rows) + len(room)
    if when == "auto" and layout_cost(total_rows, size) >= layout_cost(len(rows), appended_width):
        return None
    return placement, total_rows, size

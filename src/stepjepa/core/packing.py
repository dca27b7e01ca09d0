"""Several examples per batch row (``--packing``): which examples share a row, and the data set of those packs.

The plan is a pure function of the rows' lengths (conversation and view blocks): best-fit decreasing, longest row
first, each into the pack it fills most. :class:`stepjepa.core.layout.PackedCollator` then lays each pack out as
one row (:func:`stepjepa.core.layout.join_rows`), where the attention rule's lower bound ``doc_start`` keeps every
example to itself.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from stepjepa.core.errors import UsageError


def default_pack_length(mode: str, max_length: int) -> int:
    """The row length ``--packing`` fills when ``--pack_length`` is not given: ``max_length`` (every conversation
    fits; a row is no wider than an unpacked batch may already be), twice that for LLM-JEPA, whose two views about
    double an example's row (GSM8K, SmolLM2's tokenizer: 427 tokens a row against 210 for the conversation alone;
    rows of ``max_length`` would hold 1.02 examples each)."""
    return 2 * max_length if mode == "llm_jepa" else max_length


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """The indices of ``lengths`` in packs of at most ``capacity`` tokens: longest first (ties: lower index first),
    each into the pack it leaves the least room in, a new pack when none has room; a length over ``capacity`` gets
    a pack of its own. Packs in the order they were opened, each its indices ascending. O(n log capacity).

    >>> best_fit_decreasing([5, 4, 3, 3, 2, 1], 8)
    [[0, 2], [1, 3, 5], [4]]
    """
    if capacity < 1:
        raise UsageError(f"the pack length must be at least 1, got {capacity}")
    # A segment tree over the room a pack has left (0..capacity): how many packs have room in each node's range,
    # so the smallest room that still fits a length is found in O(log capacity).
    size = 1 << capacity.bit_length()  # leaves 0..size-1 cover 0..capacity
    count = [0] * (2 * size)
    packs_with_room: dict[int, list[int]] = {}  # room left -> packs with exactly that room
    packs: list[list[int]] = []

    def change(room: int, pack: int, delta: int) -> None:
        if delta > 0:
            packs_with_room.setdefault(room, []).append(pack)
        node = room + size
        while node:
            count[node] += delta
            node //= 2

    def smallest_room(need: int) -> int | None:
        node = need + size
        if count[node]:
            return need
        while node > 1:
            if node % 2 == 0 and count[node + 1]:  # the right sibling holds rooms above need
                node += 1
                while node < size:
                    node = 2 * node if count[2 * node] else 2 * node + 1
                return node - size
            node //= 2
        return None

    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        room = smallest_room(length) if length <= capacity else None
        if room is None:
            packs.append([index])
            if length <= capacity:
                change(capacity - length, len(packs) - 1, 1)
            continue
        pack = packs_with_room[room].pop()
        change(room, pack, -1)
        packs[pack].append(index)
        change(room - length, pack, 1)
    return [sorted(pack) for pack in packs]


def fill_ratio(lengths: Sequence[int], plan: Sequence[Sequence[int]], capacity: int) -> float:
    """The share of the packs' ``capacity`` tokens that rows fill (an over-long row counts as one full pack)."""
    return sum(lengths) / max(sum(max(capacity, sum(lengths[i] for i in pack)) for pack in plan), 1)


class PackedDataset:
    """A map-style data set of packs: item ``i`` is the rows ``plan[i]`` names, each read from ``rows`` and passed
    through ``expand`` (e.g. from the cache's stored form to the collator's), a list for the collator."""

    def __init__(self, rows: Any, plan: Sequence[Sequence[int]], expand: Callable[[Any], dict] | None = None):
        self.rows = rows
        self.plan = [list(pack) for pack in plan]
        self.expand = expand or (lambda row: row)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return [self.expand(self.rows[i]) for i in self.plan[index]]

"""core.examples: what a set of chats trains, counted from the rows kept."""

from __future__ import annotations

from stepjepa.core.examples import row_counts


def test_row_counts_by_hand():
    """Five chats, four rows kept: truncated [T, F, T, F], a view pair in [T, T, F, F] with 3 pairs in all. So 2
    truncated, 1 dropped, 2 with JEPA, LM only: row 3 truncated, row 4 too few steps. Regular counts no views."""
    flags = ([True, False, True, False], [True, True, False, False])
    assert row_counts(5, "step_jepa", *flags, pairs=3) == {"rows": 4, "truncated": 2, "dropped_no_labels": 1,
                                                           "jepa": 2, "pairs": 3, "lm_only_truncated": 1,
                                                           "lm_only_few_steps": 1}
    assert row_counts(5, "regular", *flags, pairs=3) == {"rows": 4, "truncated": 2, "dropped_no_labels": 1}
    assert dict(row_counts(2, "llm_jepa", [False, False], [True, True], pairs=2)) == {
        "rows": 2, "truncated": 0, "jepa": 2, "pairs": 2}

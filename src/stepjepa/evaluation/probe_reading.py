"""How a probe's numbers read: the legend of its table and a one-sentence verdict on one view (shared by
``stepjepa probe`` and ``stepjepa report``)."""

from __future__ import annotations

from typing import Any

PROBE_LEGEND = (
    "K0: view_a is the context's own last token (no predictor); Kk: the last of k predictor tokens. matched: mean\n"
    "cosine of each view_a with its own view_b; mismatch: with other examples' view_b; gap = matched - mismatch.\n"
    "top-1 / top-5: share of view_a whose own view_b is the nearest (among the 5 nearest) of all, chance in\n"
    "brackets. erank: effective rank of each view's embeddings (1 = every embedding points the same way)."
)


def probe_reading(name: str, view: dict[str, Any]) -> str:
    """One sentence on one view: collapsed (cosines high, no gap), specific (top-1 at least twice chance), or weak."""
    chance = 1 / view["pairs"]
    numbers = (f"matched {view['matched_cosine']:.3f}, mismatch {view['mismatched_cosine']:.3f}, "
               f"top-1 {100 * view['top1']:.1f}% against {100 * chance:.1f}% chance")
    if view["matched_cosine"] > 0.9 and view["gap"] < 0.01:
        return f"{name}: aligned but near-collapsed, every example's views alike ({numbers})"
    if view["top1"] >= 2 * chance:
        return f"{name}: each view_a picks out its own view_b well above chance ({numbers})"
    return f"{name}: view_a barely tells its own view_b from others ({numbers})"

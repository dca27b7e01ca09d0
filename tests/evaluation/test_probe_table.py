"""The probe's printed table: a legend for its columns and one reading of the model's own view, worked by hand."""

from __future__ import annotations

from stepjepa.evaluation.probe import format_probe_table, probe_reading


def view(pairs: int, matched: float, mismatched: float, top1: float) -> dict:
    return {"pairs": pairs, "matched_cosine": matched, "mismatched_cosine": mismatched, "gap": matched - mismatched,
            "top1": top1, "top5": top1, "effective_rank_a": 3.0, "effective_rank_b": 4.0}


def test_reading_names_a_near_collapse_a_specific_view_and_a_weak_one() -> None:
    """The main job's K2 (80 pairs: matched 0.956, mismatch 0.953, 3 of 80 first) is a near-collapse; 8 of 80 first
    (10 %, chance 1.25 %) with a gap of 0.04 is specific; 1 of 80 first with a gap of 0.04 is weak."""
    collapsed = probe_reading("K2", view(80, 0.956, 0.953, 3 / 80))
    assert collapsed.startswith("K2: aligned but near-collapsed") and "top-1 3.8% against 1.2% chance" in collapsed
    assert "picks out its own view_b" in probe_reading("K0", view(80, 0.45, 0.41, 8 / 80))
    assert "barely tells" in probe_reading("K0", view(80, 0.45, 0.41, 1 / 80))
    # 2 x chance exactly (2 of 80) counts as specific: the boundary is inclusive.
    assert "picks out" in probe_reading("K0", view(80, 0.45, 0.41, 2 / 80))


def test_table_has_a_row_per_view_then_the_legend_and_the_reading_of_the_models_own_k() -> None:
    summary = {"views": {"k0": view(4, 0.5, 0.25, 0.5), "k2": view(4, 0.99, 0.985, 0.25)}}
    lines = format_probe_table(summary).splitlines()
    assert lines[1].split()[:2] == ["K0", "4"] and lines[2].split()[:2] == ["K2", "4"]
    assert lines[2].split()[4] == "0.005"  # gap 0.99 - 0.985
    assert any(line.startswith("K0: view_a is the context's own last token") for line in lines)
    assert "gap = matched - mismatch" in "\n".join(lines)
    assert lines[-1].startswith("reading: K2: aligned but near-collapsed")

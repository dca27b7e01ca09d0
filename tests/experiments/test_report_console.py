"""What `stepjepa report` prints: each table with its legend, and one reading line per JEPA configuration."""

from __future__ import annotations

from test_report import entry, write_ledger
from test_report_stats import jepa_entry

from stepjepa.experiments.config import ReportConfig
from stepjepa.experiments.report import ACCURACY_LEGEND, REPORT_PROBE_LEGEND, run_report


def test_tables_carry_their_legend_and_a_reading_per_configuration(tmp_path, capsys) -> None:
    """regular 50 / 60 %, lambda 0.1 52 / 61 % on seeds 1 and 2: differences +2 and +1 points, mean +1.5; t = 1.5 /
    (0.7071 / sqrt 2) = 3 on 1 degree of freedom, one-sided p = 1/2 - atan(3)/pi = 0.102. Its K2 probe: matched
    0.9, gap (0.02 + 0.03) / 2 = 0.025, so mismatch 0.875; top-1 20 % is twice the 10 % chance of 10 pairs: it
    picks out its own view_b. lambda 0.5 on seed 1 only: +5.0 points on 1 paired seed, no p."""
    runs_dir = tmp_path / "sweep"
    write_ledger(runs_dir, [entry("regular", 1, 0.50), entry("regular", 2, 0.60), jepa_entry(0.1, 1, 0.52, 0.02),
                            jepa_entry(0.1, 2, 0.61, 0.03), jepa_entry(0.5, 1, 0.55, 0.05)])
    assert run_report(ReportConfig(runs_dir=str(runs_dir))) == 0
    out = capsys.readouterr().out
    assert ACCURACY_LEGEND in out and REPORT_PROBE_LEGEND in out
    assert ("reading: step_jepa_lbd0.1_k2_cosine vs regular: +1.5 points on 2 paired seeds (p 0.102); K2: each "
            "view_a picks out its own view_b well above chance (matched 0.900, mismatch 0.875, top-1 20.0% against "
            "10.0% chance)") in out
    assert "reading: step_jepa_lbd0.5_k2_cosine vs regular: +5.0 points on 1 paired seed (p —); K2:" in out
    assert "reading: regular" not in out

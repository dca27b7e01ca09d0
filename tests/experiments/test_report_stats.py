"""The report's statistics worked by hand: Wilson intervals, paired t intervals, Holm's correction; and the
report with them: termination, collapse diagnostics, the dose-response plot, provenance."""

from __future__ import annotations

import json
import math

import pytest
from test_report import PNG_SIGNATURE, entry, fixed_entries, write_ledger

from stepjepa.experiments.config import ReportConfig
from stepjepa.experiments.report import run_report, summarize
from stepjepa.experiments.report_stats import holm, mean_interval, paired_interval, wilson_interval

# Student's t quantiles t(0.975, df) from a printed table: df 1 and 2.
T975 = {1: 12.706205, 2: 4.302653}


def test_wilson_interval_of_33_of_80() -> None:
    """z = 1.959964 (the normal's 97.5% quantile), z^2 = 3.841459, n = 80, p = 33/80 = 0.4125.
    Centre (p + z^2/2n) / (1 + z^2/n) = (0.4125 + 0.024009) / 1.048018 = 0.436509 / 1.048018 = 0.416509.
    Half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 1.959964 sqrt(0.0030293 + 0.0001501) / 1.048018
    = 1.959964 * 0.0563858 / 1.048018 = 0.105451. Interval [0.311059, 0.521960] (33/80 is 41.2%: 31.1% to 52.2%)."""
    low, high = wilson_interval(33, 80)
    assert low == pytest.approx(0.311059, abs=2e-6) and high == pytest.approx(0.521960, abs=2e-6)


def test_wilson_interval_at_the_edges() -> None:
    """0/10: the lower end is 0, the upper z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533 (not a zero-width
    interval as the normal approximation gives). 70/100: [0.604151, 0.781051] by the same two lines as 33/80:
    centre (0.7 + 0.019207) / 1.038415 = 0.692601, half 1.959964 sqrt(0.0021 + 0.0000960) / 1.038415 = 0.088450."""
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.277533, abs=2e-6)
    assert wilson_interval(70, 100) == pytest.approx((0.604151, 0.781051), abs=2e-6)
    assert wilson_interval(0, 0) is None


def test_holm_by_hand() -> None:
    """p = 0.01, 0.04, 0.03 (m = 3): sorted 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, max(0.06, 0.04 * 1) = 0.06; back in
    the input's order 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_keeps_order_and_caps_at_one() -> None:
    """0.04, 0.001, 0.03, 0.02 (m = 4): 0.001 * 4 = 0.004; 0.02 * 3 = 0.06; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 is
    raised to the running 0.06. 0.5, 0.9, 0.7: 0.5 * 3 = 1.5 -> 1, the rest 1 too. One p stays as it is."""
    assert holm([0.04, 0.001, 0.03, 0.02]) == pytest.approx([0.06, 0.004, 0.06, 0.06])
    assert holm([0.5, 0.9, 0.7]) == [1.0, 1.0, 1.0]
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_paired_interval_by_hand() -> None:
    """Differences 0.06, 0.02, 0.05: mean 0.043333; deviations 0.016667, -0.023333, 0.006667, squares 0.000278 +
    0.000544 + 0.000044 = 0.000867, / 2 = 0.000433, sd 0.020817; se 0.020817 / sqrt 3 = 0.012019; half-width
    t(0.975, 2) * se = 4.302653 * 0.012019 = 0.051711: [-0.008378, 0.095045]. Two pairs, differences 0.02, 0.04:
    mean 0.03, sd sqrt(0.0002) = 0.014142, se 0.01, half 12.706205 * 0.01: [-0.097062, 0.157062]."""
    assert paired_interval([0.56, 0.62, 0.60], [0.50, 0.60, 0.55]) == pytest.approx((-0.008378, 0.095045), abs=2e-6)
    assert paired_interval([0.52, 0.64], [0.50, 0.60]) == pytest.approx((0.03 - T975[1] * 0.01, 0.03 + T975[1] * 0.01))
    assert paired_interval([0.3], [0.1]) is None
    # Equal differences: no spread, the interval is the point.
    assert paired_interval([0.3, 0.4], [0.1, 0.2]) == pytest.approx((0.2, 0.2))
    assert mean_interval([1.0, 3.0]) == pytest.approx((2 - T975[1] * 1.0, 2 + T975[1] * 1.0))


def test_summary_intervals_and_holm_of_the_fixed_ledger() -> None:
    """test_report's ledger. lbd 0.1: differences 6 2 5 points -> the interval above, [-0.838, +9.504] points;
    p = (1 - sqrt(13/15)) / 2 = 0.0345255. lbd 0.5: differences 2 4 -> 3 ± 12.706205 = [-9.706, +15.706];
    p = 1/2 - atan(3)/pi = 0.102416. Holm over these m = 2: 0.0345255 * 2 = 0.069051, then max(0.069051,
    0.102416 * 1) = 0.102416. llm_jepa has one pair: no p, no interval, not counted in m."""
    summaries = {s.config: s for s in summarize(fixed_entries())}
    light, medium = summaries["step_jepa_lbd0.1_k0_cosine"], summaries["step_jepa_lbd0.5_k0_cosine"]
    assert light.delta_interval == pytest.approx((0.0433333 - 0.0517114, 0.0433333 + 0.0517114), abs=1e-6)
    assert medium.delta_interval == pytest.approx((0.03 - T975[1] * 0.01, 0.03 + T975[1] * 0.01), abs=1e-6)
    assert light.p_holm == pytest.approx(2 * (1 - math.sqrt(13 / 15)) / 2)
    assert medium.p_holm == pytest.approx(0.5 - math.atan(3) / math.pi)
    single = summaries["llm_jepa_lbd0.1_k2_cosine"]
    assert (single.p_holm, single.delta_interval) == (None, None)
    assert (summaries["regular"].p_holm, summaries["regular"].delta_interval) == (None, None)


def jepa_entry(lbd: float, seed: int, accuracy: float, gap: float) -> dict:
    config = f"step_jepa_lbd{lbd:g}_k2_cosine"
    return {**entry(config, seed, accuracy), "lbd": lbd, "predictors": 2,
            "probe": {"k0": {"pairs": 10, "gap": 0.01, "top1": 0.1, "matched_cosine": 0.5},
                      "k2": {"pairs": 10, "gap": gap, "top1": 0.2, "matched_cosine": 0.9}}}


TERMINATION = {"termination_rows": 100, "ended_at_end_of_turn": 90, "hit_max_new_tokens": 10,
               "end_of_turn_share": 0.9, "max_new_tokens_share": 0.1, "mean_generated_tokens": 61.25,
               "median_generated_tokens": 55, "accuracy_when_ended": 0.6}
PROVENANCE = {"stepjepa_version": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False,
              "machine": {"cpu": "Test CPU"}, "precision": {"train": "bf16", "evaluate": "bfloat16", "probe": None},
              "command": "stepjepa sweep ..."}


def test_report_with_termination_collapse_dose_and_provenance(tmp_path, capsys) -> None:
    """A lambda sweep (0.1 and 0.5, two seeds each) with regular and the base model: the dose-response and collapse
    plots are written, the tables carry termination, the collapse diagnostics' last window, Holm over m = 2, the
    base row without a seed, and the runs' provenance (one run older than the records)."""
    runs_dir = tmp_path / "sweep"
    entries = [{**entry("base", 0, 0.20), "mode": "base", "config": "base", "run": "base"},
               entry("regular", 1, 0.50), entry("regular", 2, 0.60),
               jepa_entry(0.1, 1, 0.52, 0.02), jepa_entry(0.1, 2, 0.61, 0.03),
               jepa_entry(0.5, 1, 0.55, 0.05), jepa_entry(0.5, 2, 0.66, 0.07)]
    entries = [{**e, **TERMINATION, "provenance": PROVENANCE} for e in entries[:-1]] + [entries[-1]]
    write_ledger(runs_dir, entries)
    run = runs_dir / "step_jepa_lbd0.5_k2_cosine_seed1"
    run.mkdir()
    rows = [{"step": 10, "lm_loss": 2.0, "jepa_loss": 0.2, "view_b_mean_cosine": 0.5, "view_a_dim_std": 0.03,
             "view_b_dim_std": 0.02, "cosine_gap": 0.1},
            {"step": 20, "lm_loss": 1.5, "jepa_loss": 0.1, "view_b_mean_cosine": 0.9, "view_a_dim_std": 0.01,
             "view_b_dim_std": 0.005, "cosine_gap": 0.003}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert run_report(ReportConfig(runs_dir=str(runs_dir))) == 0
    for name in ("report_collapse.png", "report_dose.png", "report_accuracy.png"):
        assert (runs_dir / name).read_bytes().startswith(PNG_SIGNATURE), name
    text = (runs_dir / "report.md").read_text()
    assert "![dose-response over lambda](report_dose.png)" in text
    assert "![collapse diagnostics](report_collapse.png)" in text
    assert "p Holm (m = 2)" in text
    assert "| base | — | 20.0 | 90.0 | — |" in text  # no seed; ended 90%
    assert "| base | — | 20.0 [" in text
    # The last logged window of the one run with diagnostics.
    # The JEPA loss of its first and last window (0.2 -> 0.1), then the last logged window's diagnostics.
    assert "| step_jepa_lbd0.5_k2_cosine_seed1 | 20 | 0.2000 | 0.1000 | 0.9000 | 0.0100 | 0.0050 | 0.0030 |" in text
    # 50/100: Wilson centre 0.5, half 1.959964 sqrt(0.0025 + 0.000096) / 1.038415 = 0.096170.
    assert "| regular_seed1 | 1 | 50.0 [40.4, 59.6] | 25.0 | 50/100 | 90.0 | 10.0 | 61.2 | 60.0 |" in text
    assert "- Runs' code: `stepjepa 0.1.0, 0123456789ab` (6 runs)" in text
    assert "- Runs' precision (train / evaluate / probe): `bf16 / bfloat16 / —` (6 runs)" in text
    assert "- 1 runs were recorded before provenance was: unrecorded" in text
    out = capsys.readouterr().out
    assert ("termination regular_seed1: 90/100 ended at end of turn (90.0%), 10 hit --max_new_tokens (10.0%); "
            "mean 61.2 tokens; accuracy when ended 60.0%") in out
    assert "termination step_jepa_lbd0.5_k2_cosine_seed2: not recorded" in out


def test_no_dose_plot_without_a_lambda_axis(tmp_path) -> None:
    runs_dir = tmp_path / "sweep"
    write_ledger(runs_dir, [entry("regular", 1, 0.5), jepa_entry(0.1, 1, 0.5, 0.02)])
    assert run_report(ReportConfig(runs_dir=str(runs_dir))) == 0
    assert not (runs_dir / "report_dose.png").exists() and not (runs_dir / "report_collapse.png").exists()
    assert "report_dose.png" not in (runs_dir / "report.md").read_text()


def test_ledger_entry_carries_termination_and_provenance() -> None:
    """The entry copies the evaluation summary's termination numbers and records each step's precision, the
    training machine and the code (version, commit) with the sweep's command."""
    import types

    from stepjepa.experiments.ledger import ledger_entry
    from stepjepa.experiments.sweep_grid import Run

    sweep = types.SimpleNamespace(fixed_settings=lambda: {"model_name": "tiny"})
    train = {"global_step": 2, "provenance": {"machine": {"cpu": "Train CPU"}, "precision": "bf16"}}
    evaluation = {"accuracy": 0.5, "strict_accuracy": 0.25, "correct": 2, "total_examples": 4, "precision": "bfloat16",
                  "provenance": {"machine": {"cpu": "Eval CPU"}}, **TERMINATION}
    entry = ledger_entry(sweep, Run("step_jepa", 1, 0.5, 2, "cosine", "first"), train, evaluation, 3.0,
                         {"views": {}, "precision": "float32"})
    assert {key: entry[key] for key in TERMINATION} == TERMINATION
    record = entry["provenance"]
    assert record["precision"] == {"train": "bf16", "evaluate": "bfloat16", "probe": "float32"}
    assert record["machine"] == {"cpu": "Train CPU"}
    assert record["stepjepa_version"] and {"git_commit", "git_dirty", "command"} <= record.keys()
    # The base model trains nothing: its machine is its evaluation's.
    base = ledger_entry(sweep, Run("base", 0), {}, evaluation, 1.0)
    assert base["provenance"]["machine"] == {"cpu": "Eval CPU"}
    assert base["provenance"]["precision"] == {"train": None, "evaluate": "bfloat16", "probe": None}


def test_the_ledger_copies_every_termination_number_evaluate_writes() -> None:
    from stepjepa.evaluation.evaluate import termination_stats
    from stepjepa.experiments.ledger import TERMINATION_KEYS

    assert set(TERMINATION_KEYS) == set(termination_stats([])) == set(TERMINATION)

"""The `report` command: a sweep's accuracy per configuration (mean +- std, paired t-test against regular) and plots."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

from stepjepa.core.modes import MODES
from stepjepa.data import atomic_path, read_jsonl
from stepjepa.data.files import check_outputs_apart
from stepjepa.errors import UsageError
from stepjepa.evaluation.tasks import SCORE_MEANINGS
from stepjepa.experiments.config import BASE, LEDGER, ReportConfig
from stepjepa.experiments.ledger import read_ledger
from stepjepa.training.rundir import RunDir


@dataclass
class ConfigSummary:
    """One configuration's accuracies over seeds, and its paired comparison with regular fine-tuning."""

    config: str
    mode: str
    accuracy_by_seed: dict[int, float]
    mean: float
    std: float | None  # sample std (ddof=1); None with one seed
    pairs: int = 0  # seeds this configuration shares with regular
    delta: float | None = None  # mean of (this - regular) over the shared seeds
    p_value: float | None = None  # paired one-sided t-test, H1: this > regular; None below two pairs or if undefined


def summarize(entries: list[dict]) -> list[ConfigSummary]:
    """Per configuration (regular first, then in mode order): accuracy over seeds, delta and p against regular."""
    by_config: dict[str, dict[int, float]] = {}
    modes: dict[str, str] = {}
    for entry in entries:
        by_config.setdefault(entry["config"], {})[entry["seed"]] = entry["accuracy"]
        modes[entry["config"]] = entry["mode"]
    regular = by_config.get("regular", {})
    summaries = []
    for config in sorted(by_config, key=lambda c: (_mode_order(modes[c]), c)):
        accuracy = dict(sorted(by_config[config].items()))
        values = list(accuracy.values())
        summary = ConfigSummary(
            config, modes[config], accuracy, statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else None,
        )
        shared = [seed for seed in accuracy if seed in regular]
        if config not in ("regular", BASE) and shared:
            ours, theirs = [accuracy[s] for s in shared], [regular[s] for s in shared]
            summary.pairs = len(shared)
            summary.delta = statistics.fmean(a - b for a, b in zip(ours, theirs))
            summary.p_value = paired_p_value(ours, theirs)
        summaries.append(summary)
    return summaries


def _mode_order(mode: str) -> int:
    """The base model first, then the modes in their usual order."""
    return -1 if mode == BASE else MODES.index(mode) if mode in MODES else len(MODES)


def paired_p_value(ours: list[float], theirs: list[float]) -> float | None:
    """One-sided paired t-test p value for ``ours > theirs``; None below two pairs or when undefined."""
    if len(ours) < 2:
        return None
    from scipy.stats import ttest_rel

    # Identical pairs (e.g. every run at 0% on a tiny model) make t 0/0: scipy warns and returns nan.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(ours, theirs, alternative="greater").pvalue)
    return None if math.isnan(p) else p


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def summary_table(summaries: list[ConfigSummary]) -> str:
    """The Markdown table: one row per configuration."""
    lines = [
        "| configuration | seeds | accuracy % (mean ± std) | Δ vs regular (points) | paired seeds | p (paired, one-sided) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        accuracy = _percent(s.mean) + (f" ± {_percent(s.std)}" if s.std is not None else "")
        p = "—" if s.p_value is None else f"{s.p_value:.3g}"
        pairs = str(s.pairs) if s.pairs else "—"
        lines.append(f"| {s.config} | {len(s.accuracy_by_seed)} | {accuracy} | {_percent(s.delta, signed=True)} "
                     f"| {pairs} | {p} |")
    return "\n".join(lines)


@dataclass
class ProbeSummary:
    """One configuration's probe numbers for one view over seeds, each metric with its paired p against regular."""

    config: str
    view: str  # k0 (identity predictor) or kK (the K predictor tokens)
    seeds: int
    chance_top1: float
    stats: dict[str, tuple[float, float | None, float | None]]  # metric -> (mean, std, p against regular)


# (ledger key, column, scale, format): the matched cosine shows what the JEPA loss pulled together, the gap
# whether it did so for the right pairs (a collapsed embedding has both views alike for every example).
PROBE_METRICS = (("matched_cosine", "matched cos", 1, ".3f"), ("gap", "cos gap", 1, ".3f"), ("top1", "top-1 %", 100, ".1f"))


def summarize_probes(entries: list[dict]) -> list[ProbeSummary]:
    """Per configuration and view: the probe's gap and top-1 over seeds; paired one-sided p against regular's
    same view on the seeds both have (H1: the configuration aligns better)."""
    by_view: dict[tuple[str, str], dict[int, dict]] = {}
    modes = {}
    for entry in entries:
        modes[entry["config"]] = entry["mode"]
        for view, metrics in (entry.get("probe") or {}).items():
            by_view.setdefault((entry["config"], view), {})[entry["seed"]] = metrics
    summaries = []
    for config, view in sorted(by_view, key=lambda cv: (_mode_order(modes[cv[0]]), cv[0], int(cv[1][1:]))):
        runs = dict(sorted(by_view[config, view].items()))
        regular = by_view.get(("regular", view), {})
        shared = [seed for seed in runs if seed in regular] if config not in ("regular", BASE) else []
        stats = {}
        for metric, *_ in PROBE_METRICS:
            values = [m[metric] for m in runs.values()]
            p = paired_p_value([runs[s][metric] for s in shared], [regular[s][metric] for s in shared])
            stats[metric] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, p)
        chance = statistics.fmean(1 / m["pairs"] for m in runs.values())
        summaries.append(ProbeSummary(config, view, len(runs), chance, stats))
    return summaries


def probe_table(summaries: list[ProbeSummary]) -> str:
    """The Markdown table of the held-out probe: one row per configuration and view."""
    columns = "".join(f" {name} (mean ± std) | p |" for _, name, *_ in PROBE_METRICS)
    lines = [f"| configuration | view | seeds |{columns} top-1 chance % |",
             "|---|---|---:|" + "---:|---:|" * len(PROBE_METRICS) + "---:|"]
    for s in summaries:
        cells = []
        for metric, _, scale, spec in PROBE_METRICS:
            mean, std, p = s.stats[metric]
            cells.append(f"{scale * mean:{spec}}" + (f" ± {scale * std:{spec}}" if std is not None else ""))
            cells.append("—" if p is None else f"{p:.3g}")
        lines.append(f"| {s.config} | {s.view.upper()} | {s.seeds} | {' | '.join(cells)} | {100 * s.chance_top1:.1f} |")
    return "\n".join(lines)


def runs_table(entries: list[dict]) -> str:
    """The Markdown table of every run: seed, accuracies, steps and final training loss."""
    lines = ["| run | seed | accuracy % | strict % | correct | steps | train loss |", "|---|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        loss = "—" if e.get("train_loss") is None else f"{e['train_loss']:.4f}"
        lines.append(f"| {e['run']} | {e['seed']} | {_percent(e['accuracy'])} | {_percent(e['strict_accuracy'])} "
                     f"| {e['correct']}/{e['total_examples']} | {'—' if e.get('global_step') is None else e['global_step']} "
                     f"| {loss} |")
    return "\n".join(lines)


def read_metrics(path: Path) -> list[dict]:
    """The training rows of a run's metrics.jsonl; none when the file is missing or empty."""
    if not path.is_file() or not path.read_bytes().strip():
        return []
    return [row for _, row in read_jsonl(path) if isinstance(row, dict) and "step" in row]


def plot_losses(runs_dir: Path, entries: list[dict], path: Path) -> int:
    """LM and JEPA loss against step, one line per run, one colour per configuration; the runs drawn."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    lm_axes, jepa_axes = figure.subplots(1, 2)
    colours = _colours(entries)
    drawn, labelled = 0, set()
    for entry in entries:
        rows = read_metrics(RunDir(runs_dir / entry["run"]).metrics)
        if not rows:
            continue
        drawn += 1
        label = entry["config"] if entry["config"] not in labelled else None
        labelled.add(entry["config"])
        style = {"color": colours[entry["config"]], "alpha": 0.8, "linewidth": 1.2}
        lm = [(r["step"], r["lm_loss"]) for r in rows if r.get("lm_loss") is not None]
        jepa = [(r["step"], r["jepa_loss"]) for r in rows if r.get("jepa_loss") is not None]
        if lm:
            lm_axes.plot(*zip(*lm), label=label, **style)
        if jepa:
            jepa_axes.plot(*zip(*jepa), label=label, **style)
    for axes, title in ((lm_axes, "LM loss"), (jepa_axes, "JEPA loss")):
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
        else:
            axes.text(0.5, 0.5, "no runs with this loss", ha="center", va="center", transform=axes.transAxes)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return drawn


def plot_accuracy(summaries: list[ConfigSummary], path: Path) -> None:
    """Accuracy per configuration: the mean as a bar, the sample std as its error bar, each seed as a dot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 1.3 * len(summaries) + 2), 4.5), layout="constrained")
    axes = figure.subplots()
    positions = range(len(summaries))
    colours = _colours([{"config": s.config} for s in summaries])
    axes.bar(
        positions, [100 * s.mean for s in summaries], yerr=[100 * (s.std or 0.0) for s in summaries],
        color=[colours[s.config] for s in summaries], alpha=0.6, capsize=6,
    )
    for x, s in zip(positions, summaries):
        values = [100 * v for v in s.accuracy_by_seed.values()]
        axes.scatter([x] * len(values), values, color="black", s=14, zorder=3)
    axes.set_xticks(list(positions), [s.config for s in summaries], rotation=30, ha="right", fontsize="small")
    axes.set_ylabel("accuracy % (mean ± sample std; dots: seeds)")
    # From 0, and never a zero-height axis when every run scored 0% (as tiny smoke-test models do).
    top = max(max(100 * (s.mean + (s.std or 0.0)), 100 * max(s.accuracy_by_seed.values())) for s in summaries)
    axes.set_ylim(0, max(5.0, 1.15 * top))
    axes.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def _colours(entries: list[dict]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    configs = list(dict.fromkeys(e["config"] for e in entries))
    return {config: palette[i % len(palette)] for i, config in enumerate(configs)}


def render_report(runs_dir: Path, entries: list[dict], summaries: list[ConfigSummary], plots: dict[str, Path],
                  probes: list[ProbeSummary] | None = None) -> str:
    """The whole Markdown document: settings, the configuration table, the plots, every run."""
    fixed = entries[0].get("fixed", {})
    flags = " ".join(fixed.get("train_args") or []) or "(none)"
    totals = sorted({e["total_examples"] for e in entries})
    lines = [
        f"# Sweep report: {runs_dir}",
        "",
        f"{len(entries)} runs from `{runs_dir / LEDGER}`. Model `{fixed.get('model_name')}`, training data "
        f"`{fixed.get('train_file')}`, extra training flags `{flags}`; accuracy on "
        f"{' / '.join(map(str, totals))} problems of `{fixed.get('test_file')}`.",
        "",
        "Accuracy is the mean ± sample standard deviation (ddof=1) over seeds. Δ and p compare each configuration "
        "with regular fine-tuning on the seeds both have: Δ is the mean paired difference in percentage points, "
        "p the one-sided paired t-test (H1: the configuration beats regular).",
        *name_legend(entries),
        "",
        *[f"Task `{task}`: {SCORE_MEANINGS[task]}." for task in sorted({e.get("task", "gsm8k") for e in entries})],
        "",
        summary_table(summaries),
        "",
        *(_probe_section(probes) if probes else []),
        *[f"![{name}]({plot.name})" for name, plot in plots.items()],
        "",
        "## Runs",
        "",
        runs_table(entries),
        "",
    ]
    return "\n".join(lines)


def name_legend(entries: list[dict]) -> list[str]:
    """A line naming the configuration-name suffixes of Step-JEPA's pair modes and the stop-gradient, when used."""
    used = []
    if any(e.get("step_pairs") == "all" for e in entries):
        used.append("`_allpairs`: `--step_pairs all` (every step predicts the next)")
    if any(e.get("step_pairs") == "random" for e in entries):
        used.append("`_randompairs`: `--step_pairs random` (one pair per example, drawn each step)")
    if any(e.get("target_stop_grad") for e in entries):
        used.append("`_stopgrad`: `--target_stop_grad` (no gradient through the target view)")
    return ["", "In configuration names, " + "; ".join(used) + "."] if used else []


def _probe_section(probes: list[ProbeSummary]) -> list[str]:
    return [
        "## Held-out JEPA probe",
        "",
        "`stepjepa probe` on each run: the mean cosine of matched pairs (view_a_i, view_b_i), its gap over "
        "mismatched pairs (i != j), and top-1 retrieval of the right view_b among all pairs of the probe file. K0 is the identity predictor "
        "(step 1's last token), which every model has; KK the K predictor tokens of a JEPA run. p: paired "
        "one-sided t-test against regular's same view (H1: better aligned).",
        "",
        probe_table(probes),
        "",
    ]


def run_report(cfg: ReportConfig) -> int:
    """Write the Markdown report and its two plots atomically; print the configuration table."""
    from stepjepa.extras import require

    require("scipy", "stepjepa report (paired t-tests)")
    require("matplotlib", "stepjepa report (plots)")
    runs_dir = Path(cfg.runs_dir)
    ledger = read_ledger(runs_dir / LEDGER)
    if not ledger:
        raise UsageError(f"{runs_dir / LEDGER}: no finished runs (is {runs_dir} a sweep's --output_dir?)")
    entries = sorted(ledger.values(), key=lambda e: (_mode_order(e["mode"]), e["config"], e["seed"]))
    summaries = summarize(entries)
    probes = summarize_probes(entries)
    output = cfg.output_path
    plots = {
        "loss curves": output.with_name(f"{output.stem}_losses.png"),
        "accuracy per configuration": output.with_name(f"{output.stem}_accuracy.png"),
    }
    for path in (output, *plots.values()):
        if path.is_dir():
            raise UsageError(f"{path} is a directory; --output names the Markdown file to write")
    # What the report reads: the ledger and each run's metrics; none of them may be one of its outputs.
    inputs = {"the ledger": runs_dir / LEDGER,
              **{f"run {e['run']}'s metrics": RunDir(runs_dir / e["run"]).metrics for e in entries}}
    check_outputs_apart({"--output": output, **{f"the {name} plot": path for name, path in plots.items()}}, inputs)
    drawn = plot_losses(runs_dir, entries, plots["loss curves"])
    plot_accuracy(summaries, plots["accuracy per configuration"])
    text = render_report(runs_dir, entries, summaries, plots, probes)
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(summary_table(summaries))
    if probes:
        print(probe_table(probes))
    missing = sum(e["mode"] != BASE for e in entries) - drawn  # the base model trains no steps
    print(f"report {output}; plots {', '.join(str(p) for p in plots.values())}"
          + (f"; {missing} runs had no {RunDir.METRICS} to plot" if missing else ""))
    return 0

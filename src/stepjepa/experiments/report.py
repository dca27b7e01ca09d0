"""The `report` command: a sweep's accuracy per configuration (mean +- std; against regular the paired difference
with its t interval, the one-sided paired t-test and its Holm correction), each run's Wilson interval and how its
generations ended, the collapse diagnostics of training, the probe, provenance, and plots."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stepjepa.core.diagnostics import COLLAPSE_KEYS
from stepjepa.core.errors import UsageError
from stepjepa.core.modes import MODES
from stepjepa.data import atomic_path, read_jsonl
from stepjepa.data.files import check_outputs_apart
from stepjepa.evaluation.probe_reading import probe_reading
from stepjepa.evaluation.tasks import SCORE_MEANINGS
from stepjepa.experiments.config import BASE, LEDGER, ReportConfig
from stepjepa.experiments.ledger import read_ledger
from stepjepa.experiments.report_stats import holm, mean_interval, paired_interval, paired_p_value, wilson_interval
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
    delta_interval: tuple[float, float] | None = None  # 95% t interval of the mean paired difference
    p_holm: float | None = None  # p_value after Holm's correction over every configuration compared with regular
    end_of_turn_share: float | None = None  # mean over seeds of the share of replies that ended at end of turn
    counts_by_seed: dict[int, tuple[int, int]] = field(default_factory=dict)  # seed -> (correct, problems)


def summarize(entries: list[dict]) -> list[ConfigSummary]:
    """Per configuration (regular first, then in mode order): accuracy over seeds; against regular the paired
    difference, its t interval, the one-sided p and its Holm adjustment over all configurations with a p."""
    by_config: dict[str, dict[int, dict]] = {}
    modes: dict[str, str] = {}
    for entry in entries:
        by_config.setdefault(entry["config"], {})[entry["seed"]] = entry
        modes[entry["config"]] = entry["mode"]
    regular = {seed: e["accuracy"] for seed, e in by_config.get("regular", {}).items()}
    summaries = []
    for config in sorted(by_config, key=lambda c: (_mode_order(modes[c]), c)):
        runs = dict(sorted(by_config[config].items()))
        accuracy = {seed: e["accuracy"] for seed, e in runs.items()}
        values = list(accuracy.values())
        ended = [e["end_of_turn_share"] for e in runs.values() if e.get("end_of_turn_share") is not None]
        summary = ConfigSummary(
            config, modes[config], accuracy, statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else None,
            end_of_turn_share=statistics.fmean(ended) if ended else None,
            counts_by_seed={seed: (e["correct"], e["total_examples"]) for seed, e in runs.items()},
        )
        shared = [seed for seed in accuracy if seed in regular]
        if config not in ("regular", BASE) and shared:
            ours, theirs = [accuracy[s] for s in shared], [regular[s] for s in shared]
            summary.pairs = len(shared)
            summary.delta = statistics.fmean(a - b for a, b in zip(ours, theirs))
            summary.p_value = paired_p_value(ours, theirs)
            summary.delta_interval = paired_interval(ours, theirs)
        summaries.append(summary)
    tested = [s for s in summaries if s.p_value is not None]
    for s, adjusted in zip(tested, holm([s.p_value for s in tested])):
        s.p_holm = adjusted
    return summaries


def _mode_order(mode: str) -> int:
    """The base model first, then the modes in their usual order."""
    return -1 if mode == BASE else MODES.index(mode) if mode in MODES else len(MODES)


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _interval(interval: tuple[float, float] | None, signed: bool = False) -> str:
    if interval is None:
        return "—"
    return f"[{_percent(interval[0], signed)}, {_percent(interval[1], signed)}]"


def summary_table(summaries: list[ConfigSummary]) -> str:
    """The Markdown table: one row per configuration; Holm's correction runs over the m configurations with a p."""
    tested = sum(s.p_value is not None for s in summaries)
    lines = [
        "| configuration | seeds | accuracy % (mean ± std) | ended % | Δ vs regular (points) | Δ 95% CI (paired t) "
        f"| paired seeds | p (paired, one-sided) | p Holm (m = {tested}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        accuracy = _percent(s.mean) + (f" ± {_percent(s.std)}" if s.std is not None else "")
        p = "—" if s.p_value is None else f"{s.p_value:.3g}"
        p_holm = "—" if s.p_holm is None else f"{s.p_holm:.3g}"
        pairs = str(s.pairs) if s.pairs else "—"
        seeds = "—" if s.mode == BASE else str(len(s.accuracy_by_seed))
        lines.append(f"| {s.config} | {seeds} | {accuracy} | {_percent(s.end_of_turn_share)} "
                     f"| {_percent(s.delta, signed=True)} | {_interval(s.delta_interval, signed=True)} | {pairs} | {p} "
                     f"| {p_holm} |")
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
    """The Markdown table of every run: seed (none for the base model), accuracy with its Wilson 95% interval,
    strict accuracy, how the replies ended (at end of turn, at --max_new_tokens, mean length, accuracy when
    ended), steps and final training loss."""
    lines = ["| run | seed | accuracy % [Wilson 95%] | strict % | correct | ended % | capped % | mean tokens "
             "| accuracy when ended % | steps | train loss |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        loss = "—" if e.get("train_loss") is None else f"{e['train_loss']:.4f}"
        seed = "—" if e["mode"] == BASE else e["seed"]
        wilson = _interval(wilson_interval(e["correct"], e["total_examples"]))
        tokens = "—" if e.get("mean_generated_tokens") is None else f"{e['mean_generated_tokens']:.1f}"
        lines.append(f"| {e['run']} | {seed} | {_percent(e['accuracy'])} {wilson} | {_percent(e['strict_accuracy'])} "
                     f"| {e['correct']}/{e['total_examples']} | {_percent(e.get('end_of_turn_share'))} "
                     f"| {_percent(e.get('max_new_tokens_share'))} | {tokens} | {_percent(e.get('accuracy_when_ended'))} "
                     f"| {'—' if e.get('global_step') is None else e['global_step']} | {loss} |")
    return "\n".join(lines)


def termination_lines(entries: list[dict]) -> list[str]:
    """One line per run on how its generations ended (runs evaluated before this was recorded say so)."""
    lines = []
    for e in entries:
        if not e.get("termination_rows"):
            lines.append(f"termination {e['run']}: not recorded")
            continue
        lines.append(f"termination {e['run']}: {e['ended_at_end_of_turn']}/{e['termination_rows']} ended at end of "
                     f"turn ({_percent(e['end_of_turn_share'])}%), {e['hit_max_new_tokens']} hit --max_new_tokens "
                     f"({_percent(e['max_new_tokens_share'])}%); mean {e['mean_generated_tokens']:.1f} tokens; "
                     f"accuracy when ended {_percent(e['accuracy_when_ended'])}%")
    return lines


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
    """Accuracy per configuration: the mean as a bar, the sample std (two seeds or more) as its error bar, each
    seed as a dot with its run's Wilson 95% interval (so one seed is not a bar without width)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(5.0, 1.3 * len(summaries) + 2), 4.5), layout="constrained")
    axes = figure.subplots()
    positions = range(len(summaries))
    colours = _colours([{"config": s.config} for s in summaries])
    axes.bar(
        positions, [100 * s.mean for s in summaries], yerr=[100 * (s.std or 0.0) for s in summaries],
        color=[colours[s.config] for s in summaries], alpha=0.45, capsize=6,
    )
    top = 0.0
    for x, s in zip(positions, summaries):
        seeds = list(s.accuracy_by_seed)
        # The seeds side by side within the bar, so that their intervals do not hide each other.
        offsets = [0.0] if len(seeds) == 1 else [-0.25 + 0.5 * k / (len(seeds) - 1) for k in range(len(seeds))]
        for offset, seed in zip(offsets, seeds):
            value = 100 * s.accuracy_by_seed[seed]
            interval = wilson_interval(*s.counts_by_seed[seed]) if seed in s.counts_by_seed else None
            low, high = (100 * interval[0], 100 * interval[1]) if interval else (value, value)
            axes.errorbar([x + offset], [value], yerr=[[value - low], [high - value]], fmt="o", color="black",
                          markersize=3.5, elinewidth=1, capsize=2, zorder=3)
            top = max(top, high)
    axes.set_xticks(list(positions), [s.config for s in summaries], rotation=30, ha="right", fontsize="small")
    axes.set_ylabel("accuracy % (bar: mean ± sample std;\ndots: seeds with Wilson 95% interval)")
    # From 0, and never a zero-height axis when every run scored 0% (as tiny smoke-test models do).
    top = max(top, *(100 * (s.mean + (s.std or 0.0)) for s in summaries))
    axes.set_ylim(0, max(5.0, 1.1 * top))
    axes.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


# metrics.jsonl's collapse diagnostics (stepjepa.core.diagnostics) with their plot titles.
COLLAPSE_TITLES = dict(zip(COLLAPSE_KEYS, (
    "view_b mean pairwise cosine (1: collapsed)", "view_a per-dimension std (normalised; 0: collapsed)",
    "view_b per-dimension std (normalised; 0: collapsed)", "matched − mismatched cosine (in batch)")))


def plot_collapse(runs_dir: Path, entries: list[dict], path: Path) -> int:
    """The collapse diagnostics logged while training, against step, one line per run, one colour per
    configuration; the runs drawn (none: no file is written)."""
    series = {e["run"]: [r for r in read_metrics(RunDir(runs_dir / e["run"]).metrics)
                         if any(r.get(key) is not None for key in COLLAPSE_KEYS)] for e in entries}
    if not any(series.values()):
        return 0
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 7), layout="constrained")
    panels = dict(zip(COLLAPSE_KEYS, figure.subplots(2, 2).flatten()))
    colours = _colours(entries)
    labelled = set()
    for entry in entries:
        rows = series[entry["run"]]
        if not rows:
            continue
        label = entry["config"] if entry["config"] not in labelled else None
        labelled.add(entry["config"])
        for key, axes in panels.items():
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                axes.plot(*zip(*points), label=label, color=colours[entry["config"]], alpha=0.8, linewidth=1.2)
    for key, axes in panels.items():
        axes.set_title(COLLAPSE_TITLES[key], fontsize="medium")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return sum(bool(rows) for rows in series.values())


def collapse_table(runs_dir: Path, entries: list[dict]) -> str | None:
    """The Markdown table of each JEPA run's last logged collapse diagnostics, beside its JEPA loss (unweighted by
    lambda) in the first and the last logged window: whether a larger lambda moved the loss it weights; None when
    no run logged diagnostics."""
    lines = ["| run | step | jepa loss first | jepa loss last | " + " | ".join(COLLAPSE_KEYS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(COLLAPSE_KEYS)]

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    for entry in entries:
        metrics = read_metrics(RunDir(runs_dir / entry["run"]).metrics)
        rows = [r for r in metrics if any(r.get(key) is not None for key in COLLAPSE_KEYS)]
        if rows:
            losses = [r["jepa_loss"] for r in metrics if r.get("jepa_loss") is not None]
            cells = [cell(losses[0] if losses else None), cell(losses[-1] if losses else None),
                     *(cell(rows[-1].get(key)) for key in COLLAPSE_KEYS)]
            lines.append(f"| {entry['run']} | {rows[-1]['step']} | {' | '.join(cells)} |")
    return "\n".join(lines) if len(lines) > 2 else None


def _lambda_series(entries: list[dict]) -> dict[str, list[dict]]:
    """The JEPA runs grouped by everything but lambda (named by their configuration without ``_lbd...``), keeping
    only the groups with two lambdas or more."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        if e["mode"] not in ("regular", BASE) and e.get("lbd") is not None:
            groups.setdefault(re.sub(r"_lbd[^_]+", "", e["config"]), []).append(e)
    return {name: runs for name, runs in groups.items() if len({e["lbd"] for e in runs}) > 1}


def _probe_gap(entry: dict) -> float | None:
    """The held-out probe's cosine gap of the view the run trained (K predictor tokens: kK), if probed."""
    view = (entry.get("probe") or {}).get(f"k{entry.get('predictors') or 0}")
    return None if view is None else view.get("gap")


def plot_dose(entries: list[dict], path: Path) -> bool:
    """Dose-response: accuracy and probe gap against lambda, a dot per seed, the mean over seeds with its 95% t
    interval, regular's mean (and interval) as a band; False (no file) when no configuration varies lambda."""
    series = _lambda_series(entries)
    if not series:
        return False
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    panels = dict(zip(("accuracy", "gap"), figure.subplots(1, 2)))
    colours = _colours([{"config": name} for name in ["regular", *series]])
    measures = {"accuracy": lambda e: 100 * e["accuracy"], "gap": _probe_gap}
    regular = [e for e in entries if e["mode"] == "regular"]
    for measure, axes in panels.items():
        base = [v for v in map(measures[measure], regular) if v is not None]
        if base:
            axes.axhline(statistics.fmean(base), color=colours["regular"], linewidth=1.2, label="regular (mean)")
            interval = mean_interval(base)
            if interval:
                axes.axhspan(*interval, color=colours["regular"], alpha=0.15, label="regular 95% CI")
        for name, runs in series.items():
            by_lbd: dict[float, list[float]] = {}
            for e in runs:
                value = measures[measure](e)
                if value is not None:
                    by_lbd.setdefault(e["lbd"], []).append(value)
            if not by_lbd:
                continue
            colour = colours[name]
            for lbd, values in by_lbd.items():
                axes.scatter([lbd] * len(values), values, color=colour, s=12, alpha=0.5)
            lambdas = sorted(by_lbd)
            means = [statistics.fmean(by_lbd[lbd]) for lbd in lambdas]
            intervals = [mean_interval(by_lbd[lbd]) or (m, m) for lbd, m in zip(lambdas, means)]
            axes.errorbar(lambdas, means, yerr=[[m - lo for m, (lo, _) in zip(means, intervals)],
                                                [hi - m for m, (_, hi) in zip(means, intervals)]],
                          color=colour, marker="o", capsize=4, label=f"{name} (mean, 95% CI over seeds)")
        lambdas = sorted({e["lbd"] for runs in series.values() for e in runs})
        if lambdas[0] > 0:
            axes.set_xscale("log")
        axes.set_xticks(lambdas, [f"{lbd:g}" for lbd in lambdas], minor=False)
        axes.set_xticks([], minor=True)
        axes.set_xlabel("lambda (JEPA loss weight)")
        axes.grid(alpha=0.3)
        if axes.lines or axes.collections:
            axes.legend(fontsize="small")
        else:
            axes.text(0.5, 0.5, "no probe in these runs", ha="center", va="center", transform=axes.transAxes)
    panels["accuracy"].set_ylabel("accuracy %")
    panels["gap"].set_ylabel("held-out probe: matched − mismatched cosine")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return True


def provenance_lines(entries: list[dict], report: dict) -> list[str]:
    """Where the runs and this report came from: version and commit (with uncommitted changes or not), machines,
    precisions; runs of a ledger older than these records are counted as unrecorded."""

    def code(record: dict) -> str:
        commit = record.get("git_commit")
        where = "no git checkout" if commit is None else commit[:12] + (" + uncommitted changes"
                                                                         if record.get("git_dirty") else "")
        return f"stepjepa {record.get('stepjepa_version')}, {where}"

    def machine(record: dict) -> str:
        info = record.get("machine") or {}
        return info.get("gpu") or info.get("cpu") or "unrecorded"

    recorded = [e["provenance"] for e in entries if e.get("provenance")]
    lines = ["## Provenance", ""]
    for label, counts in (
        ("code", Counter(map(code, recorded))),
        ("machine", Counter(map(machine, recorded))),
        ("precision (train / evaluate / probe)", Counter(
            " / ".join(r.get("precision", {}).get(step) or "—" for step in ("train", "evaluate", "probe"))
            for r in recorded)),
    ):
        parts = [f"`{value}` ({count} runs)" for value, count in counts.items()]
        lines.append(f"- Runs' {label}: {', '.join(parts) or '—'}")
    if len(recorded) < len(entries):
        lines.append(f"- {len(entries) - len(recorded)} runs were recorded before provenance was: unrecorded")
    lines += [f"- This report: {code(report)}, machine `{machine(report)}`, command `{report.get('command')}`", ""]
    return lines


def _colours(entries: list[dict]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    configs = list(dict.fromkeys(e["config"] for e in entries))
    return {config: palette[i % len(palette)] for i, config in enumerate(configs)}


def render_report(runs_dir: Path, entries: list[dict], summaries: list[ConfigSummary], plots: dict[str, Path],
                  probes: list[ProbeSummary] | None = None, collapse: str | None = None,
                  provenance: dict | None = None) -> str:
    """The whole Markdown document: settings, the configuration table, the probe, the plots, the collapse
    diagnostics, every run, provenance."""
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
        "with regular fine-tuning on the seeds both have: Δ is the mean paired difference in percentage points "
        "with its two-sided 95% t interval, p the one-sided paired t-test (H1: the configuration beats regular), "
        "and p Holm that p after Holm's step-down correction over the m configurations compared with regular "
        "(the chance of any false positive among them stays at the level). Ended %: the share of replies that "
        "ended at the end-of-turn token rather than at --max_new_tokens (mean over seeds). Each run's accuracy "
        "comes with its binomial Wilson 95% interval in the table of runs.",
        *name_legend(entries),
        "",
        *[f"Task `{task}`: {SCORE_MEANINGS[task]}." for task in sorted({e.get("task", "gsm8k") for e in entries})],
        "",
        summary_table(summaries),
        "",
        *(_probe_section(probes) if probes else []),
        *[f"![{name}]({plot.name})" for name, plot in plots.items()],
        "",
        *(_collapse_section(collapse) if collapse else []),
        "## Runs",
        "",
        runs_table(entries),
        "",
        *provenance_lines(entries, provenance or {}),
    ]
    return "\n".join(lines)


def _collapse_section(table: str) -> list[str]:
    return [
        "## Collapse diagnostics while training",
        "",
        "Each JEPA run's JEPA loss (as logged, before lambda weights it) in its first and last logged window, and "
        "the last logged window's diagnostics (metrics.jsonl; the plot shows every window): the mean pairwise cosine "
        "of the view_b embeddings (1: all alike), the mean per-dimension standard deviation of the normalised "
        "view_a and view_b (0: collapsed; about 1/sqrt(hidden size) when spread evenly), and the matched minus "
        "mismatched cosine of the pairs within each batch.",
        "",
        table,
        "",
    ]


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


ACCURACY_LEGEND = (
    "accuracy %: share of held-out problems answered right, mean ± sample std over seeds. Δ: mean paired difference "
    "from regular (points) with its 95% t interval; p: paired one-sided t-test (H1: better than regular), p Holm: "
    "after Holm's correction over the configurations compared; —: fewer than 2 paired seeds.")
REPORT_PROBE_LEGEND = (
    "K0: view_a is the context's own last token (no predictor); Kk: the last of k predictor tokens. matched cos: "
    "mean cosine of each view_a with its own view_b; cos gap: matched minus the cosine with other examples' view_b "
    "(0: the views do not tell examples apart); top-1 %: share whose own view_b is the nearest, chance = 1 / pairs.")


def readings(summaries: list[ConfigSummary], probes: list[ProbeSummary]) -> list[str]:
    """One line per JEPA configuration: its accuracy difference from regular and how its trained view reads in the
    probe (its predictor view kK if probed, else k0)."""
    lines = []
    for summary in summaries:
        if summary.mode in ("regular", BASE):
            continue
        p = "—" if summary.p_value is None else f"{summary.p_value:.3g}"
        delta = "no paired seed" if summary.delta is None else (
            f"{100 * summary.delta:+.1f} points on {summary.pairs} paired seed{'s' if summary.pairs != 1 else ''} "
            f"(p {p})")
        text = f"reading: {summary.config} vs regular: {delta}"
        views = {probe.view: probe for probe in probes if probe.config == summary.config}
        view = max(views, key=lambda name: int(name[1:]), default=None)
        if view is not None:
            stats = views[view].stats
            matched, gap = stats["matched_cosine"][0], stats["gap"][0]
            text += "; " + probe_reading(view.upper(), {
                "pairs": round(1 / views[view].chance_top1), "matched_cosine": matched, "gap": gap,
                "mismatched_cosine": matched - gap, "top1": stats["top1"][0]})
        lines.append(text)
    return lines


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
        "collapse diagnostics": output.with_name(f"{output.stem}_collapse.png"),
        "accuracy per configuration": output.with_name(f"{output.stem}_accuracy.png"),
        "dose-response over lambda": output.with_name(f"{output.stem}_dose.png"),
    }
    for path in (output, *plots.values()):
        if path.is_dir():
            raise UsageError(f"{path} is a directory; --output names the Markdown file to write")
    # What the report reads: the ledger and each run's metrics; none of them may be one of its outputs.
    inputs = {"the ledger": runs_dir / LEDGER,
              **{f"run {e['run']}'s metrics": RunDir(runs_dir / e["run"]).metrics for e in entries}}
    check_outputs_apart({"--output": output, **{f"the {name} plot": path for name, path in plots.items()}}, inputs)
    drawn = plot_losses(runs_dir, entries, plots["loss curves"])
    if not plot_collapse(runs_dir, entries, plots["collapse diagnostics"]):
        del plots["collapse diagnostics"]
    plot_accuracy(summaries, plots["accuracy per configuration"])
    if not plot_dose(entries, plots["dose-response over lambda"]):
        del plots["dose-response over lambda"]
    from stepjepa.machine import provenance

    text = render_report(runs_dir, entries, summaries, plots, probes, collapse_table(runs_dir, entries),
                         provenance(None, None))
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(summary_table(summaries))
    print(ACCURACY_LEGEND)
    if probes:
        print(probe_table(probes))
        print(REPORT_PROBE_LEGEND)
    print("\n".join(readings(summaries, probes or [])))
    print("\n".join(termination_lines(entries)))
    missing = sum(e["mode"] != BASE for e in entries) - drawn  # the base model trains no steps
    print(f"report {output}; plots {', '.join(str(p) for p in plots.values())}"
          + (f"; {missing} runs had no {RunDir.METRICS} to plot" if missing else ""))
    return 0

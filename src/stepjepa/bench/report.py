"""The bench's report: the machine it ran on, ratios between its measurements, and the table for the terminal."""

from __future__ import annotations

import statistics

from stepjepa.bench.config import MULTIPASS


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(report: dict) -> None:
    """Ratios against regular per mode (each precision against its own regular), bf16 against fp32, and the
    packed modes' speed-up over their multi-pass computation."""
    by_precision = report.get("precisions") or {report["precision"]: report["modes"]}
    for modes in by_precision.values():
        _ratios_within(modes)
    if {"fp32", "bf16"} <= by_precision.keys():
        for mode, result in by_precision["bf16"].items():
            fp32 = by_precision["fp32"][mode]
            result["step_time_vs_fp32"] = _ratio(result["median_step_s"], fp32["median_step_s"])
            result["paired_step_time_vs_fp32"] = statistics.median(a / b for a, b in zip(result["step_s"], fp32["step_s"]))
            result["peak_mem_vs_fp32"] = _ratio(result["peak_mem_mb"], fp32["peak_mem_mb"])


def _ratios_within(modes: dict[str, dict]) -> None:
    """Each mode against regular in the same precision, and packed modes against their multi-pass computation."""
    regular = modes.get("regular")
    for result in modes.values():
        if regular:
            result["step_time_vs_regular"] = _ratio(result["median_step_s"], regular["median_step_s"])
            # Robustness checks on a noisy machine: the ratio of the fastest steps, and the median of the
            # per-round ratios (each pair ran the same batch, moments apart).
            result["min_step_time_vs_regular"] = _ratio(result["min_step_s"], regular["min_step_s"])
            result["paired_step_time_vs_regular"] = statistics.median(
                a / b for a, b in zip(result["step_s"], regular["step_s"]))
            result["tokens_per_s_vs_regular"] = _ratio(result["tokens_per_s"], regular["tokens_per_s"])
            result["peak_mem_vs_regular"] = _ratio(result["peak_mem_mb"], regular["peak_mem_mb"])
            # Tokens run (padding included) against regular's: the cost a packed row cannot avoid; the time
            # ratio over it says whether a step costs more than its extra tokens.
            result["processed_tokens_vs_regular"] = _ratio(result["processed_tokens"], regular["processed_tokens"])
            result["time_vs_token_ratio"] = _ratio(result["step_time_vs_regular"],
                                                   result["processed_tokens_vs_regular"])
    for multipass, packed in MULTIPASS.items():
        if multipass in modes and packed in modes:
            modes[packed]["speedup_vs_multipass"] = _ratio(modes[multipass]["median_step_s"], modes[packed]["median_step_s"])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def format_report(report: dict) -> str:
    """The report as a table for the terminal."""
    cfg, info = report["config"], report["machine"]
    lines = [
        f"model {report['model']} on {report['device']} ({info['cpu']}, {info['torch_threads']} threads); "
        f"batch {cfg['batch_size']}, {cfg['steps']} steps after {cfg['warmup']} warm-up, "
        f"max_length {cfg['max_length']}, K={cfg['predictors']}, {', '.join(report.get('precisions') or [report['precision']])}; "
        f"peak memory: {report['memory_method']}",
    ]
    if report.get("attention"):
        attention = report["attention"]
        first = next(iter(report["modes"].values()))
        lines.append(f"attention {attention['implementation']} ({attention['reason']}); matmul peak "
                     f"{first['matmul_peak_flops'] / 1e12:.3g} TFLOP/s in {report['precision']} (MFU: model FLOPs "
                     "of the real tokens, 6N + 12 L H T per token, over it); compile s: first step - median")
    lines.append("")
    header = ("mode", "precision", "median s", "min s", "max s", "real tok/s", "slots/s", "pad %", "build %",
              "MFU %", "compile s", "peak MB", "time x reg", "paired x reg", "mem x reg", "time x fp32", "tokens run")
    rows = [header]
    by_precision = report.get("precisions") or {report["precision"]: report["modes"]}
    for precision, modes in by_precision.items():
        for name, r in modes.items():
            rows.append((name, precision, _fmt(r["median_step_s"], ".3f"), _fmt(r["min_step_s"], ".3f"),
                         _fmt(r["max_step_s"], ".3f"), _fmt(r["tokens_per_s"], ".0f"), _fmt(r.get("slots_per_s"), ".0f"),
                         _percent(r.get("padding_fraction")), _percent(r.get("build_share")), _percent(r.get("mfu")),
                         _fmt(r.get("compile_s"), ".2f"), _fmt(r["peak_mem_mb"], ".0f"),
                         _fmt(r.get("step_time_vs_regular"), ".2f"), _fmt(r.get("paired_step_time_vs_regular"), ".2f"),
                         _fmt(r.get("peak_mem_vs_regular"), ".2f"), _fmt(r.get("step_time_vs_fp32"), ".2f"),
                         str(r["processed_tokens"])))
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines += ["  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))) for row in rows]
    speedups = [f"  {name}: multi-pass step time / packed {r['speedup_vs_multipass']:.2f}"
                for name, r in report["modes"].items() if r.get("speedup_vs_multipass") is not None]
    if speedups:
        lines += ["", f"packed against multi-pass ({report['precision']}):", *speedups]
    if report.get("eval"):
        e = report["eval"]
        lines += ["", f"generation ({e['examples']} prompts, up to {e['max_new_tokens']} new tokens): "
                  f"batch size 1 {e['batch_size_1']['examples_per_s']:.2f} examples/s, batch size "
                  f"{e['batched']['batch_size']} {e['batched']['examples_per_s']:.2f} examples/s ({e['speedup']:.2f}x)"]
    return "\n".join(lines)

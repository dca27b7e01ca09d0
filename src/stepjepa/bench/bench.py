"""``stepjepa bench``: the cost of one training step in each mode, on the same fixed batches.

The modes are listed in :mod:`stepjepa.bench.modes`, how they are timed and their peak memory read in
:mod:`stepjepa.bench.measure`. The bench measures and prints ratios (against regular, against float32, packed
against multi-pass); the targets they are held to are stated in the README's performance section.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from stepjepa.bench.config import BenchConfig
from stepjepa.bench.measure import PeakMemory, measure_eval, measure_memory, measure_times
from stepjepa.bench.modes import bench_attention
from stepjepa.bench.report import add_ratios, format_report
from stepjepa.data import write_json_atomic
from stepjepa.machine import machine
from stepjepa.precision import resolve_device


def run_bench(cfg: BenchConfig) -> int:
    """Measure every requested mode (and generation with --eval); print the table or the JSON; 0."""
    device = resolve_device(cfg.device)
    modes, precisions = cfg.mode_list(), cfg.precision_list()
    attention = bench_attention(cfg, device)  # an explicit implementation the model cannot run stops here
    memory = {}
    if cfg.isolate:
        for precision in precisions:
            one = replace(cfg, precisions=precision, bf16=False, no_bf16=False)
            for mode in modes:
                print(f"bench: peak memory of {mode} in {precision} (fresh process) ...", file=sys.stderr, flush=True)
                memory[precision, mode] = _run_isolated(one, mode)
    print(f"bench: step times of {', '.join(modes)} in {', '.join(precisions)}, interleaved ...", file=sys.stderr,
          flush=True)
    results = measure_times(cfg, with_memory=not cfg.isolate)
    method = next(iter(memory.values()))["memory_method"] if memory else PeakMemory(device).method + (
        " of each step; modes share one process")
    for precision, by_mode in results.items():
        for mode, result in by_mode.items():
            result.update(memory.get((precision, mode), {}))
            result.pop("memory_method", None)
    report = {
        "model": cfg.model_name + (" (tiny random)" if cfg.tiny else ""),
        "device": device,
        "machine": machine(device),
        "memory_method": method,
        "config": asdict(cfg),
        "attention": asdict(attention),
        "precision": precisions[0],
        "modes": results[precisions[0]],
        "precisions": results if len(precisions) > 1 else None,
        "eval": None,
    }
    if cfg.eval:
        print("bench: generation at batch size 1 and batched ...", file=sys.stderr, flush=True)
        report["eval"] = measure_eval(cfg)
    add_ratios(report)
    if cfg.output:
        write_json_atomic(cfg.output, report)
    print(json.dumps(report) if cfg.json else format_report(report))
    return 0


def _run_isolated(cfg: BenchConfig, mode: str) -> dict:
    """:func:`~stepjepa.bench.measure.measure_memory` of one mode in a fresh Python process (this module's
    ``--memory-worker``); its output is shown only if it fails."""
    with tempfile.TemporaryDirectory(prefix="stepjepa-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "stepjepa.bench.bench", "--memory-worker", mode, str(result)]
        done = subprocess.run(command, input=json.dumps(asdict(cfg)), text=True, capture_output=True)
        if done.returncode != 0 or not result.is_file():
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise RuntimeError(f"bench memory worker for '{mode}' failed with exit status {done.returncode}:\n{tail}")
        return json.loads(result.read_text())


def _worker(mode: str, result_path: str) -> int:
    cfg = BenchConfig(**json.loads(sys.stdin.read()))
    Path(result_path).write_text(json.dumps(measure_memory(cfg, mode)))
    return 0


if __name__ == "__main__":
    # Only the memory worker runs this module directly; users run `stepjepa bench`.
    if len(sys.argv) != 4 or sys.argv[1] != "--memory-worker":
        raise SystemExit("usage: stepjepa bench [flags]")
    raise SystemExit(_worker(sys.argv[2], sys.argv[3]))

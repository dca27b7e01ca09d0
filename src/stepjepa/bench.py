"""``stepjepa bench``: the cost of one training step in each mode, on the same fixed batches.

The modes are listed in :mod:`stepjepa.bench_modes`, how they are timed and their peak memory read in
:mod:`stepjepa.measure`. The bench measures and prints ratios (against regular, against float32, packed
against multi-pass); the targets they are held to are stated in the README's performance section.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from stepjepa.bench_modes import ALL_MODES, MODES
from stepjepa.bench_report import add_ratios, format_report, machine
from stepjepa.data import write_json_atomic
from stepjepa.flags import check_finite_floats, check_seed
from stepjepa.flags import field_help as _help
from stepjepa.measure import PeakMemory, measure_eval, measure_memory, measure_times
from stepjepa.models import EMBEDDED_ALIAS
from stepjepa.precision import BOTH_FLAGS, check_device, precision_name, resolve_device, use_bf16

PRECISIONS = ("fp32", "bf16")
MIN_MEASURED_STEPS = 10


@dataclass
class BenchConfig:
    """Flags of ``stepjepa bench``: step time, throughput and peak memory of each training mode."""

    model_name: str = field(default=EMBEDDED_ALIAS, metadata=_help(
        f"Hugging Face id, local directory, or the embedded '{EMBEDDED_ALIAS}'."))
    tiny: bool = field(default=False, metadata=_help(
        "Replace the model by a small random one of the same family (2 layers, width 64), same tokenizer."))
    data_file: Optional[str] = field(default=None, metadata=_help(
        "GSM8K ({question, answer}) or chat JSONL ({messages}); default: synthetic GSM8K-like problems."))
    batch_size: int = field(default=4, metadata=_help("Examples per training step."))
    steps: int = field(default=MIN_MEASURED_STEPS, metadata=_help(
        f"Measured steps per mode (at least {MIN_MEASURED_STEPS}), each on its own fixed batch."))
    warmup: int = field(default=2, metadata=_help("Unmeasured steps first (the first one allocates AdamW state)."))
    max_length: int = field(default=512, metadata=_help("Maximum conversation tokens; longer ones are truncated."))
    predictors: int = field(default=2, metadata=_help("K predictor tokens of llm_jepa and step_jepa."))
    lora: bool = field(default=False, metadata=_help("Train LoRA adapters (rank --lora_rank) instead of all weights."))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank."))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate."))
    seed: int = field(default=0, metadata=_help("Seed of the row choice, new token embeddings and LoRA init."))
    modes: str = field(default=",".join(MODES), metadata=_help(
        f"Comma-separated modes to run, of {', '.join(ALL_MODES)}."))
    device: str = field(default="auto", metadata=_help(
        "auto (cuda if available, else mps, else cpu), cpu, mps, cuda or cuda:N."))
    bf16: bool = field(default=False, metadata=_help(
        "Time in bf16 mixed precision (float32 weights, bf16 autocast). Default auto: bf16 where the hardware "
        "runs it fast (CUDA with bf16, CPUs with avx512_bf16/amx_bf16), float32 elsewhere."))
    no_bf16: bool = field(default=False, metadata=_help("Time in float32."))
    precisions: str = field(default="", metadata=_help(
        "Comma-separated precisions to time side by side, interleaved on the same batches: fp32,bf16 "
        "(default: the one --bf16/--no_bf16/auto picks)."))
    isolate: bool = field(default=True, metadata=_help(
        "Measure each mode's peak memory in a fresh process (comparable between modes; slower)."))
    json: bool = field(default=False, metadata=_help("Print one JSON object on stdout instead of the table."))
    output: Optional[str] = field(default=None, metadata=_help("Also write the JSON report to this file."))
    eval: bool = field(default=False, metadata=_help(
        "Also time batched generation: examples/s at batch size 1 and at --eval_batch_size."))
    eval_examples: int = field(default=16, metadata=_help("Prompts generated in each --eval run."))
    eval_batch_size: int = field(default=16, metadata=_help(
        "The larger generation batch of --eval (stepjepa evaluate's default batch size)."))
    eval_max_new_tokens: int = field(default=128, metadata=_help("Most tokens generated per prompt in --eval."))

    def __post_init__(self) -> None:
        check_finite_floats(self)
        check_seed("seed", self.seed)
        positive = {"batch_size": self.batch_size, "max_length": self.max_length, "warmup": self.warmup,
                    "eval_examples": self.eval_examples, "eval_max_new_tokens": self.eval_max_new_tokens,
                    "lora_rank": self.lora_rank}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        if self.steps < MIN_MEASURED_STEPS:
            raise ValueError(f"--steps must be at least {MIN_MEASURED_STEPS} (medians over fewer are noise), got {self.steps}")
        if self.predictors < 0:
            raise ValueError(f"--predictors must be 0 or more, got {self.predictors}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")
        if self.eval_batch_size < 2:
            raise ValueError(f"--eval_batch_size must be at least 2 (it is compared with batch size 1), got {self.eval_batch_size}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"--device must be auto, cpu, mps, cuda or cuda:N, got '{self.device}'")
        check_device(self.device)
        if self.data_file is not None and not Path(self.data_file).is_file():
            raise ValueError(f"--data_file {self.data_file}: no such file")
        if self.bf16 and self.no_bf16:
            raise ValueError(BOTH_FLAGS)
        if self.precisions and (self.bf16 or self.no_bf16):
            raise ValueError("--precisions names the precisions itself; drop --bf16/--no_bf16")
        precisions = self._named_precisions()
        if self.precisions and (not precisions or set(precisions) - set(PRECISIONS) or len(set(precisions)) != len(precisions)):
            raise ValueError(f"--precisions '{self.precisions}': give distinct precisions of {', '.join(PRECISIONS)}, comma-separated")
        modes = self.mode_list()
        unknown = [m for m in modes if m not in ALL_MODES]
        if unknown or not modes or len(set(modes)) != len(modes):
            raise ValueError(f"--modes '{self.modes}': give distinct modes of {', '.join(ALL_MODES)}, comma-separated")

    def mode_list(self) -> list[str]:
        return [m.strip() for m in self.modes.split(",") if m.strip()]

    def _named_precisions(self) -> list[str]:
        return [p.strip() for p in self.precisions.split(",") if p.strip()]

    def precision_list(self) -> list[str]:
        """The precisions to time: --precisions, else the one --bf16/--no_bf16/auto picks on this device."""
        if self.precisions:
            return self._named_precisions()
        device_type = resolve_device(self.device).split(":")[0]
        return [precision_name(use_bf16(self.bf16, self.no_bf16, device_type))]

    def num_examples(self) -> int:
        """Chats in the fixed batches: one batch per measured step."""
        return self.batch_size * self.steps


def run_bench(cfg: BenchConfig) -> int:
    """Measure every requested mode (and generation with --eval); print the table or the JSON; 0."""
    device = resolve_device(cfg.device)
    modes, precisions = cfg.mode_list(), cfg.precision_list()
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
    """:func:`~stepjepa.measure.measure_memory` of one mode in a fresh Python process (this module's
    ``--memory-worker``); its output is shown only if it fails."""
    with tempfile.TemporaryDirectory(prefix="stepjepa-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "stepjepa.bench", "--memory-worker", mode, str(result)]
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
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-worker":
        raise SystemExit(_worker(sys.argv[2], sys.argv[3]))
    from stepjepa.cli import main

    raise SystemExit(main(["bench", *sys.argv[1:]]))

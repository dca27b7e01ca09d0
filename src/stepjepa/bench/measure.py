"""Measuring training steps: step times interleaved across modes and precisions, peak memory, generation speed.

Timing: every mode trains one model with one AdamW optimiser, interleaved: round i runs batch i in every
mode (the order rotated each round), so load changes on a shared machine hit all modes alike. Median, min
and max over ``--steps`` rounds after ``--warmup`` rounds; batch i holds the same chats in every mode.
Throughput counts conversation tokens only (view blocks are the overhead being measured), so every mode is
credited the same tokens for the same batch.

Peak memory: :func:`measure_memory` runs in a fresh process per mode (``stepjepa bench --isolate``), so
allocator state and lazily allocated optimiser state start alike: one warm-up step, a reset of the peak, then
the mode's largest batches. On CPU the peak is the resident set (``VmHWM``, reset through
``/proc/self/clear_refs``): weights, gradients, AdamW state and the largest footprint of a step. On CUDA it
is ``torch.cuda.max_memory_allocated``. :func:`measure_times` with ``with_memory`` reads each step's peak in
the shared timing process instead, where memory freed by one mode but kept by the allocator is seen by the next.
"""

from __future__ import annotations

import gc
import re
import resource
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stepjepa.bench.config import ALL_MODES
from stepjepa.bench.modes import (
    bench_attention,
    bench_chats,
    build_batches,
    load_bench_model,
    loss_function,
    padding_fraction,
    token_counts,
)
from stepjepa.evaluation.generation import generate_responses
from stepjepa.precision import resolve_device

if TYPE_CHECKING:
    from stepjepa.bench.config import BenchConfig

MEMORY_BATCHES = 3


class PeakMemory:
    """Peak memory of this process since :meth:`reset`: the resident set on CPU, allocated memory on CUDA."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.method = "torch.cuda.max_memory_allocated" if self.cuda else "VmHWM (peak resident set) after reset"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current resident set
        except OSError:
            self.method = "ru_maxrss (peak resident set of the whole process; not reset)"

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) / 1024 if match else None

    def current_mb(self) -> float | None:
        return torch.cuda.memory_allocated() / 2**20 if self.cuda else self._status_mb("VmRSS")

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        if self.method.startswith("VmHWM"):
            peak = self._status_mb("VmHWM")
            if peak is not None:
                return peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _sync(device: str) -> None:
    """Wait for the accelerator's queued work, so a timer read afterwards covers it."""
    if device != "cpu":
        torch.accelerator.synchronize(device)


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def matmul_parameters(model: torch.nn.Module) -> int:
    """The parameters a token multiplies through: all but the embedding lookups (token, position), plus the
    output head even when it shares the token embedding's weight."""
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    count = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) in embeddings:
        count += head.weight.numel()
    return count


def model_flops_per_token(parameters: int, layers: int, hidden: int, seq: int) -> int:
    """Training FLOPs per token (forward and backward): ``6 N`` for the matmuls through ``N`` parameters plus
    ``12 L H T`` for attention over ``T`` tokens in ``L`` layers of width ``H`` (PaLM's appendix B count)."""
    return 6 * parameters + 12 * layers * hidden * seq


def matmul_flops_per_s(device: str, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """The best FLOP/s of a square ``size`` matmul in ``dtype`` on ``device``: the peak MFU is measured against."""
    size = size or (8192 if device.startswith("cuda") else 1024)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    inner = 10 if device.startswith("cuda") else 1
    a @ b  # warm-up (kernel choice, allocation)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        began = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - began) / inner)
    return 2 * size**3 / best


class StepRunner:
    """One model and one AdamW optimiser; :meth:`step` times a full training step of any mode on a batch,
    under bf16 autocast when ``bf16`` (float32 weights and optimiser, as the Trainer's mixed precision)."""

    def __init__(self, cfg: BenchConfig, device: str, bf16: bool = False, attn_implementation: str = "sdpa"):
        self.device = device
        self.bf16 = bf16
        self.model, self.tokenizer, self.predictor_ids = load_bench_model(cfg, device, attn_implementation)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Fused AdamW, as the Trainer's default optimiser (adamw_torch_fused) is.
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, fused=True)
        self.losses = {mode: loss_function(mode) for mode in ALL_MODES}

    def step(self, mode: str, batch: dict) -> float:
        """Seconds of forward + backward + optimiser step (device synchronised at both ends)."""
        _sync(self.device)
        began = time.perf_counter()
        # The phases are named for torch.profiler (scripts/profile_step.py); unprofiled, a name costs microseconds.
        with torch.profiler.record_function("step: forward"):
            with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16):
                out = self.losses[mode](self.model, batch)
        with torch.profiler.record_function("step: backward"):
            out.loss.backward()
        with torch.profiler.record_function("step: optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - began


def _fixed_batches(cfg: BenchConfig, trainer: StepRunner, modes: list[str],
                   attn_implementation: str = "sdpa") -> tuple[dict, dict, dict]:
    """Per mode: its batches on the device, the host seconds each took to build, and each one's padding
    fraction."""
    chats = bench_chats(cfg, trainer.tokenizer)
    batches, build_s, padding = {}, {}, {}
    for mode in modes:
        built, build_s[mode] = build_batches(cfg, mode, trainer.tokenizer, chats, trainer.predictor_ids,
                                             attn_implementation, trainer.device.startswith("cuda"))
        padding[mode] = [padding_fraction(mode, b) for b in built]
        batches[mode] = [_to(b, trainer.device) for b in built]
    return batches, build_s, padding


def measure_times(cfg: BenchConfig, with_memory: bool) -> dict[str, dict[str, dict]]:
    """Every mode's step times in every precision on the same batches, interleaved: round i runs batch i in
    every (precision, mode) (the order rotated each round), so load changes on a shared machine hit all alike.
    Each precision trains its own copy of the model. Returns ``{precision: {mode: result}}``.

    ``with_memory``: also the peak memory of each mode's steps in this shared process (reset before each step).
    """
    device = resolve_device(cfg.device)
    modes, precisions = cfg.mode_list(), cfg.precision_list()
    attention = bench_attention(cfg, device).implementation
    runners = {p: StepRunner(cfg, device, bf16=p == "bf16", attn_implementation=attention) for p in precisions}
    batches, build_s, padding = _fixed_batches(cfg, runners[precisions[0]], modes, attention)
    memory = PeakMemory(device)
    variants = [(p, mode) for p in precisions for mode in modes]
    # The first step of each variant compiles what it runs (flex_attention's kernels on CUDA): timed apart.
    first_s = {}
    for i in range(cfg.warmup):
        for p, mode in variants:
            seconds = runners[p].step(mode, batches[mode][i % cfg.steps])
            first_s.setdefault((p, mode), seconds)
    gc.collect()
    model = runners[precisions[0]].model
    shape = (matmul_parameters(model), model.config.num_hidden_layers, model.config.hidden_size)
    peaks_flops = {p: matmul_flops_per_s(device, torch.bfloat16 if p == "bf16" else torch.float32)
                   for p in precisions}
    times = {variant: [] for variant in variants}
    peaks = {variant: 0.0 for variant in variants}
    for i in range(cfg.steps):
        for variant in variants[i % len(variants):] + variants[: i % len(variants)]:
            memory.reset()
            times[variant].append(runners[variant[0]].step(variant[1], batches[variant[1]][i]))
            peaks[variant] = max(peaks[variant], memory.peak_mb())
    results = {p: _mode_results(modes, batches, build_s, {m: times[p, m] for m in modes},
                                {m: peaks[p, m] for m in modes}, with_memory) for p in precisions}
    for p in precisions:
        for mode in modes:
            _add_efficiency(results[p][mode], mode, batches[mode], padding[mode], first_s[p, mode], shape,
                            peaks_flops[p])
    del runners, batches
    gc.collect()
    return results


def _mode_results(modes: list[str], batches: dict, build_s: dict, times: dict, peaks: dict,
                  with_memory: bool) -> dict[str, dict]:
    """Per mode: the step-time statistics, throughput and token counts of one precision's steps."""
    results = {}
    for mode in modes:
        counts = [token_counts(mode, batch) for batch in batches[mode]]
        conversation = [c[0] for c in counts]
        results[mode] = {
            "median_step_s": statistics.median(times[mode]),
            "min_step_s": min(times[mode]),
            "max_step_s": max(times[mode]),
            # Each step's conversation tokens over its time; the median of those.
            "tokens_per_s": statistics.median(n / t for n, t in zip(conversation, times[mode])),
            "peak_mem_mb": round(peaks[mode], 1) if with_memory else None,
            "step_s": times[mode],
            "conversation_tokens": sum(conversation),
            "processed_tokens": sum(c[1] for c in counts),
            "jepa_rows": sum(c[2] for c in counts),
            "jepa_pairs": sum(c[3] for c in counts),
            # Examples: a packed LLM-JEPA batch may hold its views in rows after the conversations' (issue16).
            "rows": sum(int(b.get("conversation_rows", len(b["input_ids"]))) for b in batches[mode]),
            "median_batch_build_s": statistics.median(build_s[mode]),
        }
    return results


def _add_efficiency(result: dict, mode: str, batches: list[dict], padding: list[float], first_s: float,
                    shape: tuple[int, int, int], peak_flops: float) -> None:
    """The columns of issue 22: padding, host batch building against the step, tokens run per second, model
    FLOPs utilisation on the real (conversation) tokens against the measured matmul peak, and compile time."""
    parameters, layers, hidden = shape
    flops = [token_counts(mode, b)[0] * model_flops_per_token(parameters, layers, hidden, _conversation_width(b))
             for b in batches]
    times = result["step_s"]
    result.update({
        "padding_fraction": statistics.mean(padding),
        "build_share": result["median_batch_build_s"] / result["median_step_s"],
        "slots_per_s": statistics.median(token_counts(mode, b)[1] / t for b, t in zip(batches, times)),
        "model_flops_per_step": statistics.mean(flops),
        "matmul_peak_flops": peak_flops,
        "mfu": statistics.median(f / t / peak_flops for f, t in zip(flops, times)),
        "first_step_s": first_s,
        "compile_s": max(first_s - result["median_step_s"], 0.0),
    })


def _conversation_width(batch: dict) -> int:
    """The longest conversation of a batch: the sequence its real tokens attend over."""
    return int(batch.get("conversation_width", batch["input_ids"].shape[1]))


def measure_memory(cfg: BenchConfig, mode: str) -> dict:
    """Peak memory of ``mode``'s training steps in the config's first precision, in this (fresh) process:
    one warm-up step, a reset, then the :data:`MEMORY_BATCHES` batches of this mode that run the most tokens.
    """
    device = resolve_device(cfg.device)
    memory = PeakMemory(device)
    attention = bench_attention(cfg, device).implementation
    trainer = StepRunner(cfg, device, bf16=cfg.precision_list()[0] == "bf16", attn_implementation=attention)
    batches, _, _ = _fixed_batches(cfg, trainer, [mode], attention)
    largest = sorted(batches[mode], key=lambda b: -token_counts(mode, b)[1])[:MEMORY_BATCHES]
    loaded_mb = memory.current_mb()
    trainer.step(mode, batches[mode][0])
    gc.collect()
    memory.reset()
    before_mb = memory.current_mb()
    for batch in largest:
        trainer.step(mode, batch)
    return {"peak_mem_mb": round(memory.peak_mb(), 1), "mem_after_load_mb": _round(loaded_mb),
            "mem_before_steps_mb": _round(before_mb), "memory_method": memory.method}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def measure_eval(cfg: BenchConfig) -> dict:
    """Examples/s of greedy generation with :func:`stepjepa.evaluation.generation.generate_responses` at batch size 1
    and at ``cfg.eval_batch_size``, on the same prompts (system + user of the bench's chats).

    Each batch size runs twice, in the order 1, N, N, 1, and its two times are averaged: a load that
    drifts steadily on a shared machine then weighs on both alike.
    """
    device = resolve_device(cfg.device)
    model, tokenizer, _ = load_bench_model(cfg, device)
    # Generation runs with bf16 weights when the bench's first precision is bf16, as stepjepa evaluate does.
    model = model.to(torch.bfloat16 if cfg.precision_list()[0] == "bf16" else torch.float32).eval()
    prompts = [m[:-1] for m in bench_chats(cfg, tokenizer)[: cfg.eval_examples]]
    generate_responses(model, tokenizer, prompts[:1], batch_size=1, max_new_tokens=4)  # warm-up
    seconds, generated = {1: [], cfg.eval_batch_size: []}, {}
    for batch_size in (1, cfg.eval_batch_size, cfg.eval_batch_size, 1):
        _sync(device)
        began = time.perf_counter()
        responses = generate_responses(model, tokenizer, prompts, batch_size=batch_size,
                                       max_new_tokens=cfg.eval_max_new_tokens)
        _sync(device)
        seconds[batch_size].append(time.perf_counter() - began)
        generated[batch_size] = sum(len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"])
    runs = {
        size: {"batch_size": size, "seconds": statistics.mean(times), "seconds_runs": times,
               "examples_per_s": len(prompts) / statistics.mean(times), "generated_tokens": generated[size]}
        for size, times in seconds.items()
    }
    single, batched = runs[1], runs[cfg.eval_batch_size]
    return {"examples": len(prompts), "max_new_tokens": cfg.eval_max_new_tokens, "batch_size_1": single,
            "batched": batched, "speedup": batched["examples_per_s"] / single["examples_per_s"]}

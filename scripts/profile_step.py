"""Profile training steps with torch.profiler: where a step's time goes, and whether the host waits on the device.

    python scripts/profile_step.py --tiny --mode step_jepa                      # CPU, a tiny random model (~1 min)
    python scripts/profile_step.py --model_name /tmp/models/llama-1b --data_file gsm8k/train.jsonl \\
        --batch_size 16 --mode step_jepa --attn_implementation auto --trace step.json   # a CUDA GPU

The steps are the bench's (:class:`stepjepa.bench.measure.StepRunner`: forward, backward, AdamW step on the
batches ``stepjepa train`` builds for this device and attention implementation), ``--warmup`` unprofiled steps
first (compilation, allocation), then ``--steps`` profiled ones. Prints per step: wall time, the device's busy
time (CUDA kernels), kernel launches, host read-backs (``aten::_local_scalar_dense``: ``.item()``, ``int(t)``;
each waits for the GPU), device synchronisations; then the top operators by self time. ``--trace`` writes a
Chrome trace (chrome://tracing, https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import time

import torch

from stepjepa.bench.config import ALL_MODES, BenchConfig
from stepjepa.bench.measure import StepRunner
from stepjepa.bench.modes import bench_attention, bench_chats, build_batches
from stepjepa.precision import resolve_device, use_bf16

READ_BACKS = ("aten::_local_scalar_dense",)
SYNCS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize")
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="the model's family shrunk (bench --tiny)")
    parser.add_argument("--data_file", default=None, help="GSM8K or chat JSONL (default: synthetic problems)")
    parser.add_argument("--mode", default="step_jepa", choices=ALL_MODES)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--attn_implementation", default="auto")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trace", default=None, help="write a Chrome trace here")
    parser.add_argument("--rows", type=int, default=15, help="operators in the table")
    args = parser.parse_args()

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    # steps: the bench's minimum; only warmup + steps batches are used.
    cfg = BenchConfig(model_name=args.model_name, tiny=args.tiny, data_file=args.data_file,
                      batch_size=args.batch_size, max_length=args.max_length, device=args.device,
                      attn_implementation=args.attn_implementation, isolate=False,
                      steps=max(10, args.warmup + args.steps))
    attention = bench_attention(cfg, device)
    bf16 = use_bf16(False, False, device.split(":")[0])
    runner = StepRunner(cfg, device, bf16=bf16, attn_implementation=attention.implementation)
    built, _ = build_batches(cfg, args.mode, runner.tokenizer, bench_chats(cfg, runner.tokenizer),
                             runner.predictor_ids, attention.implementation, cuda)
    batches = [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
               for b in built]
    print(f"{args.mode} on {device}, {'bf16' if bf16 else 'fp32'}, attention {attention.implementation} "
          f"({attention.reason}), batch {args.batch_size}")
    for i in range(args.warmup):
        seconds = runner.step(args.mode, batches[i])
        print(f"warm-up step {i + 1}: {seconds:.3f} s")

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    walls = []
    with torch.profiler.profile(activities=activities) as profile:
        for i in range(args.warmup, args.warmup + args.steps):
            began = time.perf_counter()
            runner.step(args.mode, batches[i])
            walls.append(time.perf_counter() - began)
    events = profile.key_averages()

    def count(names) -> int:
        return sum(event.count for event in events if event.key in names)

    steps = args.steps
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]  # the device's own work
    busy = sum(getattr(e, "self_device_time_total", 0) for e in kernels)  # microseconds
    print(f"wall per step: {sum(walls) / steps:.4f} s (" + ", ".join(f"{w:.3f}" for w in walls) + ")")
    if cuda:
        print(f"device busy per step: {busy / steps / 1e6:.4f} s; kernel launches per step: "
              f"{count(LAUNCHES) / steps:.0f}; device syncs per step: {count(SYNCS) / steps:.1f}")
    phases = {}
    for event in profile.events():
        if event.name in READ_BACKS:
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("step: "):
                parent = parent.cpu_parent
            phase = parent.name[6:] if parent is not None else "outside the step"
            phases[phase] = phases.get(phase, 0) + 1
    print(f"host read-backs per step ({', '.join(READ_BACKS)}): {count(READ_BACKS) / steps:.1f}"
          + "".join(f"; {phase} {n / steps:.1f}" for phase, n in sorted(phases.items()))
          + ("" if cuda else " (on the CPU a read-back waits for nothing)"))
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows))
    if args.trace:
        profile.export_chrome_trace(args.trace)
        print(f"trace written to {args.trace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

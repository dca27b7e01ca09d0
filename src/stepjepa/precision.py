"""Where and in which precision a run computes: bf16 where the hardware runs it fast, float32 elsewhere.

Training keeps float32 weights and optimizer state and computes under autocast (the Trainer's mixed
precision), so saved models and merged LoRA weights stay float32. Inference (evaluate, probe) loads
the weights in bf16 directly, as it does on CUDA.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from stepjepa.core.errors import UsageError

# CPU flags of units that compute bf16 natively (AVX512-BF16 on Zen 4 / Cooper Lake, AMX on Sapphire Rapids).
FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=4)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first processor in ``cpuinfo``; empty where that file does not exist (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def fast_bf16(device_type: str) -> bool:
    """True where bf16 runs faster than float32: CUDA with bf16 support, or a CPU with bf16 units."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return any(flag in cpu_flags() for flag in FAST_BF16_CPU_FLAGS)
    return False


def use_bf16(bf16: bool, no_bf16: bool, device_type: str) -> bool:
    """``--bf16`` forces bf16, ``--no_bf16`` float32; neither: :func:`fast_bf16` decides (auto)."""
    if bf16 or no_bf16:
        return bf16
    return fast_bf16(device_type)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any model loads."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            available = f"{torch.cuda.device_count()} CUDA devices" if torch.cuda.is_available() else "no CUDA"
            raise UsageError(f"--device {device}: this machine has {available}; use --device cpu or auto")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available on this machine; use --device cpu or auto")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda, else mps, else cpu; anything else as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def inference_dtype(device: str, bf16: bool = False, no_bf16: bool = False) -> torch.dtype:
    """bf16 where it is fast (or asked); float32 with --no_bf16; auto on CUDA without bf16: float16."""
    device_type = device.split(":")[0]
    if use_bf16(bf16, no_bf16, device_type):
        return torch.bfloat16
    return torch.float16 if device_type == "cuda" and not (bf16 or no_bf16) else torch.float32


def precision_name(bf16: bool) -> str:
    return "bf16" if bf16 else "fp32"


AUTO_RULE = ("Default auto: bf16 on CUDA with bf16 support and on CPUs with avx512_bf16 or amx_bf16 units, "
             "float32 elsewhere.")
BF16_HELP = "Compute in bf16 (mixed precision: float32 weights, bf16 autocast). " + AUTO_RULE
NO_BF16_HELP = "Compute in float32 even where bf16 is fast."
BOTH_FLAGS = "--bf16 and --no_bf16 contradict each other; give one (or neither: auto)"

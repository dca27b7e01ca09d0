"""The flags of `stepjepa bench` and the constants they are checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from stepjepa.core.attention import ATTN_CHOICES
from stepjepa.core.errors import UsageError
from stepjepa.flag_groups import (
    DeviceFlags,
    LoraFlags,
    ModelFlags,
    PrecisionFlags,
    SeedFlags,
    StepFlags,
    override,
)
from stepjepa.flags import field_help as _help
from stepjepa.precision import precision_name, resolve_device, use_bf16

PRECISIONS = ("fp32", "bf16")

MIN_MEASURED_STEPS = 10

# --packing: the chat pool holds one chat per this many tokens of the rows to fill (enough for chats of 32 tokens).
PACK_POOL_TOKENS = 32

MODES = ("regular", "llm_jepa", "step_jepa", "step_jepa_multipass")  # the default run

# Multi-pass modes and the packed mode whose losses they compute; the modes after MODES run only when asked.
MULTIPASS = {"step_jepa_multipass": "step_jepa", "llm_jepa_multipass": "llm_jepa",
             "step_jepa_all_multipass": "step_jepa_all"}

ALL_MODES = MODES + ("llm_jepa_multipass", "step_jepa_all", "step_jepa_all_multipass")

# A packed bench mode -> the training mode and --step_pairs it runs.
TRAINING_MODES = {"regular": ("regular", "first"), "llm_jepa": ("llm_jepa", "first"),
                  "step_jepa": ("step_jepa", "first"), "step_jepa_all": ("step_jepa", "all")}


# Bases in reverse of their --help order (flag_groups): model, step, LoRA, seed, device, precision, then bench's own.
@dataclass
class BenchConfig(PrecisionFlags, DeviceFlags, SeedFlags, LoraFlags, StepFlags, ModelFlags):
    """Flags of ``stepjepa bench``: step time, throughput and peak memory of each training mode."""

    tiny: bool = field(default=False, metadata=_help(
        "Replace the model by a small random one of the same family (2 layers, width 64), same tokenizer."))
    data_file: Optional[str] = field(default=None, metadata=_help(
        "GSM8K ({question, answer}) or chat JSONL ({messages}); default: synthetic GSM8K-like problems."))
    batch_size: int = field(default=4, metadata=_help("Examples per training step.", min=1))
    steps: int = field(default=MIN_MEASURED_STEPS, metadata=_help(
        f"Measured steps per mode (at least {MIN_MEASURED_STEPS}), each on its own fixed batch.",
        min=MIN_MEASURED_STEPS, reason="medians over fewer are noise"))
    warmup: int = field(default=2, metadata=_help("Unmeasured steps first (the first one allocates AdamW state).", min=1))
    predictors: int = override(StepFlags, "predictors", default=2, help="K predictor tokens of llm_jepa and step_jepa.")
    learning_rate: float = override(StepFlags, "learning_rate", default=1e-5, help="AdamW learning rate.")
    seed: int = override(SeedFlags, "seed", default=0, help="Seed of the row choice, new token embeddings and LoRA init.")
    modes: str = field(default=",".join(MODES), metadata=_help(
        f"Comma-separated modes to run, of {', '.join(ALL_MODES)} (with --packing the single-pass ones; "
        "by default regular, llm_jepa, step_jepa)."))
    packing: bool = field(default=False, metadata=_help(
        "Several conversations per row, as `stepjepa train --packing`: --batch_size counts rows of at most "
        "--pack_length tokens, filled by best-fit decreasing from a pool of the chats; tokens/s counts real tokens."))
    pack_length: Optional[int] = field(default=None, metadata=_help(
        "--packing: most tokens of a row (default as `stepjepa train --packing`: --max_length, LLM-JEPA twice that).",
        min=1))
    precisions: str = field(default="", metadata=_help(
        "Comma-separated precisions to time side by side, interleaved on the same batches: fp32,bf16 "
        "(default: the one --bf16/--no_bf16/auto picks)."))
    attn_implementation: str = field(default="auto", metadata=_help(
        "Attention kernel, as stepjepa train's: auto (flex_attention on CUDA where the model runs it, else sdpa), "
        "sdpa, eager or flex_attention (CUDA only)."))
    isolate: bool = field(default=True, metadata=_help(
        "Measure each mode's peak memory in a fresh process (comparable between modes; slower)."))
    json: bool = field(default=False, metadata=_help("Print one JSON object on stdout instead of the table."))
    output: Optional[str] = field(default=None, metadata=_help("Also write the JSON report to this file."))
    eval: bool = field(default=False, metadata=_help(
        "Also time batched generation: examples/s at batch size 1 and at --eval_batch_size."))
    eval_examples: int = field(default=16, metadata=_help("Prompts generated in each --eval run.", min=1))
    eval_batch_size: int = field(default=16, metadata=_help(
        "The larger generation batch of --eval (stepjepa evaluate's default batch size).",
        min=2, reason="it is compared with batch size 1"))
    eval_max_new_tokens: int = field(default=128, metadata=_help("Most tokens generated per prompt in --eval.", min=1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data_file is not None and not Path(self.data_file).is_file():
            raise UsageError(f"--data_file {self.data_file}: no such file")
        if self.precisions and (self.bf16 or self.no_bf16):
            raise UsageError("--precisions names the precisions itself; drop --bf16/--no_bf16")
        precisions = self._named_precisions()
        if self.precisions and (not precisions or set(precisions) - set(PRECISIONS) or len(set(precisions)) != len(precisions)):
            raise UsageError(f"--precisions '{self.precisions}': give distinct precisions of {', '.join(PRECISIONS)}, comma-separated")
        if self.attn_implementation not in ATTN_CHOICES:
            raise UsageError(f"--attn_implementation must be one of {', '.join(ATTN_CHOICES)}, "
                             f"got {self.attn_implementation!r}")
        if self.pack_length is not None and not self.packing:
            raise UsageError(f"--pack_length needs --packing, got {self.pack_length} without it")
        if self.packing and self.modes == ",".join(MODES):
            self.modes = ",".join(m for m in MODES if m not in MULTIPASS)
        multipass = [m for m in self.mode_list() if m in MULTIPASS]
        if self.packing and multipass:
            raise UsageError(f"--packing packs the single-pass modes only; drop {', '.join(multipass)} from --modes")
        modes = self.mode_list()
        unknown = [m for m in modes if m not in ALL_MODES]
        if unknown or not modes or len(set(modes)) != len(modes):
            raise UsageError(f"--modes '{self.modes}': give distinct modes of {', '.join(ALL_MODES)}, comma-separated")

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

    def row_length(self, mode: str) -> int:
        """--packing: the most tokens of a row of training ``mode`` (--pack_length, else as train's default)."""
        from stepjepa.core.packing import default_pack_length

        return self.pack_length if self.pack_length is not None else default_pack_length(mode, self.max_length)

    def num_examples(self) -> int:
        """Chats in the fixed batches: one batch per measured step; with --packing a pool that fills every row
        (chats of 32 tokens or more; the packs are then drawn from the pool)."""
        if not self.packing:
            return self.batch_size * self.steps
        return self.batch_size * self.steps * max(self.row_length("llm_jepa") // PACK_POOL_TOKENS, 1)

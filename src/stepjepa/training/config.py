"""The flags of `stepjepa train`: one dataclass, checked once when parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from stepjepa.core.attention import ATTN_CHOICES
from stepjepa.core.errors import UsageError
from stepjepa.core.layout import STEP_PAIRS
from stepjepa.core.losses import INFONCE_TEMPERATURE
from stepjepa.core.modes import Mode
from stepjepa.flag_groups import LoraFlags, ModelFlags, PrecisionFlags, SeedFlags, StepFlags, override
from stepjepa.flags import field_help as _help


# Bases in reverse of their --help order (flag_groups): model, step, LoRA, seed, precision, then train's own flags.
@dataclass
class TrainConfig(PrecisionFlags, SeedFlags, LoraFlags, StepFlags, ModelFlags):
    """Flags of `stepjepa train` and `finetune_step_jepa_adapted.py` (the options guide's names and defaults)."""

    train_file: Optional[str] = field(default=None, metadata=_help("Chat JSONL training data (required)."))
    eval_file: Optional[str] = field(default=None, metadata=_help("Chat JSONL evaluation data (loss only)."))
    output_dir: str = field(default="./checkpoints", metadata=_help("Where the model, metrics and checkpoints go."))
    batch_size: int = field(default=4, metadata=_help("Examples per device per micro-batch.", min=1))
    grad_accum: int = field(default=1, metadata=_help("Gradient accumulation steps.", min=1))
    num_epochs: float = field(default=1.0, metadata=_help("Training epochs.", above=0))
    max_steps: int = field(default=-1, metadata=_help("Stop after this many optimizer steps (-1: run the epochs)."))
    eval_steps: int = field(default=50, metadata=_help("Evaluate every N steps when --eval_file is given.", min=1))
    save_steps: int = field(default=100, metadata=_help("Save a resumable checkpoint every N steps.", min=1))
    save_total_limit: int = field(default=2, metadata=_help(
        "Keep this run's newest N checkpoints (0: keep all); other runs' checkpoints are never deleted.",
        min=0, reason="0 keeps every checkpoint"))
    logging_steps: int = field(default=10, metadata=_help("Log (console and metrics.jsonl) every N steps.", min=1))
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of steps of linear learning-rate warm-up.",
                                                             min=0, below=1))
    regular: bool = field(default=False, metadata=_help("Regular fine-tuning: LM loss only, no JEPA."))
    step_jepa: bool = field(default=False, metadata=_help("Step-JEPA: predict step 2's embedding from the context up to step 1."))
    step_pairs: str = field(default="first", metadata=_help(
        "Step-JEPA pairs: first (step 1 -> step 2), all (every step -> the next, all in the one packed row), "
        "random (one of those pairs per example, drawn each step from seed, step and example)."))
    target_stop_grad: bool = field(default=False, metadata=_help(
        "Stop the gradient through view_b (the target embedding), as I-JEPA and BYOL do."))
    lbd: float = field(default=0.1, metadata=_help("JEPA loss weight (lambda).", min=0))
    gamma: float = field(default=1.0, metadata=_help("LM loss weight (gamma).", min=0))
    last_token: str = field(default="auto", metadata=_help(
        "Embedding token counted from a view's end (e.g. -2), or 'auto': the view's last content token "
        "(LLM-JEPA). Step-JEPA views have no template tokens: their embedding is always their last token."))
    jepa_l2: bool = field(default=False, metadata=_help("JEPA loss ||a - b||_2."))
    jepa_mse: bool = field(default=False, metadata=_help("JEPA loss mean((a - b)^2)."))
    infonce: bool = field(default=False, metadata=_help(f"JEPA loss InfoNCE (temperature {INFONCE_TEMPERATURE}, in-batch negatives)."))
    jepa_ratio: float = field(default=-1.0, metadata=_help("Random JEPA dropout: each batch gets the JEPA term with this probability (<= 0: always)."))
    seed: int = override(SeedFlags, "seed", aliases=["--finetune_seed"])
    debug: int = field(default=5, metadata=_help("0 quiet, 1 basic info (no step bar), 2-4 and a step bar, 5 losses during training, 7 print the first batch's layout and exit."))
    overwrite_output_dir: bool = field(default=False, metadata=_help("Allow a non-empty output directory (files this run writes are replaced)."))
    resume_from_checkpoint: Optional[str] = field(default=None, metadata=_help("Checkpoint directory, or 'latest' in --output_dir."))
    group_by_length: bool = field(default=False, metadata=_help("Batch examples of similar length together (less padding)."))
    packing: bool = field(default=False, metadata=_help(
        "Several whole conversations per row, with their view blocks (placed by best-fit decreasing, longest "
        "first): no padding to speak of, and each conversation still sees only itself. --batch_size then counts "
        "rows, so the examples per step vary (about --pack_length / mean example length per row)."))
    pack_length: Optional[int] = field(default=None, metadata=_help(
        "--packing: most tokens of a row, conversations and view blocks together (default --max_length, the "
        "widest conversation an unpacked run meets; LLM-JEPA 2 x --max_length, as its views double an "
        "example); a longer example gets a row of its own.", min=1))
    gradient_checkpointing: bool = field(default=False, metadata=_help("Recompute activations in backward (less memory, slower)."))
    attn_implementation: str = field(default="auto", metadata=_help(
        "Attention kernel: auto (default: flex_attention on CUDA when the model supports it and its head "
        "dimension is at least 16, else sdpa), sdpa (dense mask), eager, or flex_attention (CUDA only: a "
        "BlockMask built on the GPU, no T x T mask; Llama-family models)."))
    compile: bool = field(default=False, metadata=_help(
        "Compile the model with torch.compile (the first steps take longer while it compiles)."))
    dataloader_num_workers: Optional[int] = field(default=None, metadata=_help(
        "Processes that collate batches while the model trains (default: 0 on the CPU, whose cores train; "
        "4 on CUDA, with pinned memory and non-blocking copies).", min=0))
    num_proc: Optional[int] = field(default=None, metadata=_help(
        "Processes that tokenize the data (default: the machine's cores, at most one per MiB of data).", min=1))
    cache_dir: Optional[str] = field(default=None, metadata=_help(
        "Where tokenized rows are cached, keyed by data, tokenizer, template and row settings "
        "(default: $STEPJEPA_DATA_CACHE, else data/ in the model cache, ~/.cache/stepjepa/data)."))
    no_data_cache: bool = field(default=False, metadata=_help("Tokenize afresh and store nothing in the cache."))
    streaming: bool = field(default=False, metadata=_help(
        "Tokenize the training file while training, for data of any size: nothing cached, no tokenizing pass "
        "before the first step; rows are shuffled within --shuffle_buffer, not over the whole file; needs "
        "--max_steps."))
    shuffle_buffer: int = field(default=1000, metadata=_help("--streaming: rows held (and shuffled) at a time.", min=1))
    report_to: str = field(default="none", metadata=_help(
        "Trackers that also receive the logged metrics (transformers' report_to): none, tensorboard, wandb, "
        "... or several, comma-separated; tensorboard writes under --output_dir/runs."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regular and self.step_jepa:
            raise UsageError("--regular and --step_jepa contradict each other; choose one mode")
        losses = [flag for flag in ("jepa_l2", "jepa_mse", "infonce") if getattr(self, flag)]
        if len(losses) > 1:
            raise UsageError(f"choose one JEPA loss, got --{' and --'.join(losses)}")
        # A weight at its default cannot be told from an absent flag: only other values are refused.
        weights = [name for name in ("lbd", "gamma") if getattr(self, name) != self.__dataclass_fields__[name].default]
        if self.regular and (losses or self.predictors or weights):
            raise UsageError("--regular trains without JEPA; drop the JEPA options (" + ", ".join(
                [f"--{flag}" for flag in losses + weights] + (["--predictors"] if self.predictors else [])) + ")")
        if self.regular and self.target_stop_grad:
            raise UsageError("--regular trains without JEPA; drop --target_stop_grad")
        if self.step_pairs not in STEP_PAIRS:
            raise UsageError(f"--step_pairs must be one of {', '.join(STEP_PAIRS)}, got {self.step_pairs!r}")
        if self.step_pairs != "first" and not self.step_jepa:
            raise UsageError(f"--step_pairs {self.step_pairs} needs --step_jepa (LLM-JEPA has one pair per example)")
        if self.jepa_ratio > 1:
            raise UsageError(f"--jepa_ratio is a probability, at most 1; got {self.jepa_ratio}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise UsageError(f"--max_steps must be -1 (run the epochs) or >= 1, got {self.max_steps}")
        if self.last_token != "auto":
            try:
                offset = int(self.last_token)
            except ValueError:
                raise UsageError(f"--last_token must be 'auto' or a negative integer, got {self.last_token!r}") from None
            if offset >= 0:
                raise UsageError(f"--last_token counts from the end and must be negative, got {offset}")
        if self.attn_implementation not in ATTN_CHOICES:
            raise UsageError(f"--attn_implementation must be one of {', '.join(ATTN_CHOICES)}, "
                             f"got {self.attn_implementation!r}")
        check_trackers(report_to(self.report_to))
        if self.streaming and self.max_steps < 1:
            raise UsageError("--streaming needs --max_steps (a stream has no length to count epochs by)")
        if self.streaming and self.group_by_length:
            raise UsageError("--group_by_length sorts the whole data set; it cannot with --streaming")
        if self.pack_length is not None and not self.packing:
            raise UsageError("--pack_length sizes the rows of --packing; add --packing or drop --pack_length")
        if self.packing and self.streaming:
            raise UsageError("--packing plans its rows over the whole data set; it cannot with --streaming")
        if self.packing and self.group_by_length:
            raise UsageError("--packing fills each row already; drop --group_by_length")
        if not self.train_file:
            raise UsageError("--train_file is required")

    @property
    def mode(self) -> Mode:
        """The mode the flags choose: --regular, --step_jepa, else LLM-JEPA."""
        return "regular" if self.regular else "step_jepa" if self.step_jepa else "llm_jepa"

    @property
    def loss_kind(self) -> str:
        return "l2" if self.jepa_l2 else "mse" if self.jepa_mse else "infonce" if self.infonce else "cosine"

    @property
    def last_token_offset(self) -> int | None:
        """None for 'auto' (the view's last content token)."""
        return None if self.last_token == "auto" or self.mode == "step_jepa" else int(self.last_token)

    @property
    def row_length(self) -> int:
        """--packing: the most tokens a row holds (--pack_length, by default :func:`default_pack_length`)."""
        from stepjepa.core.packing import default_pack_length

        return self.pack_length if self.pack_length is not None else default_pack_length(self.mode, self.max_length)

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (2e-4 if self.lora else 2e-5)


def report_to(value: str) -> str | list[str]:
    """``--report_to``: 'none', or the trackers named, comma-separated (as transformers' ``report_to``)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    return "none" if not names or names == ["none"] else names

def check_trackers(names: str | list[str]) -> None:
    """Every tracker of --report_to is one transformers knows and is installed (tensorboard: our extra)."""
    if names == "none":
        return
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    from stepjepa.extras import require

    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise UsageError(f"--report_to: unknown tracker {name!r}; one of none, {', '.join(INTEGRATION_TO_CALLBACK)}")
        if name == "tensorboard":
            require("tensorboard", "--report_to tensorboard")
        elif name not in get_available_reporting_integrations():
            raise UsageError(f"--report_to {name} needs its package: pip install {name}")

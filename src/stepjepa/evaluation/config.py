"""The flags of `stepjepa evaluate` and `stepjepa probe`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from stepjepa.core.errors import UsageError
from stepjepa.core.modes import Mode, check_mode
from stepjepa.evaluation.tasks import TASKS
from stepjepa.flag_groups import DeviceFlags, PrecisionFlags, SeedFlags, override
from stepjepa.flags import field_help as _help
from stepjepa.precision import AUTO_RULE

# The scalar metrics of a probe's view (and of each pair number): what the probe reports per view and a sweep's
# ledger keeps of it.
PROBE_SCALARS = ("pairs", "matched_cosine", "mismatched_cosine", "gap", "top1", "top5", "effective_rank_a",
                 "effective_rank_b")


# Bases in reverse of their --help order (flag_groups): seed, device, precision, then evaluate's own flags.
@dataclass
class EvaluateConfig(PrecisionFlags, DeviceFlags, SeedFlags):
    """Flags of ``stepjepa evaluate``."""

    model_path: Optional[str] = field(
        default=None,
        metadata={"help": "Model to evaluate: a training output directory, a LoRA adapter directory, a hub id, "
                  "or the embedded alias smollm2-135m-instruct."},
    )
    test_file: Optional[str] = field(
        default=None,
        metadata={"help": "GSM8K as published ({question, answer with '#### N'}) or chat JSONL ({messages}, "
                  "optional 'answer')."},
    )
    task: Optional[str] = field(
        default=None,
        metadata={"help": "gsm8k (numeric answer), exact_match (the reply equals the gold assistant message, "
                  "surrounding whitespace aside) or regex (exact match, or the same language: NL-RX). Default: "
                  "exact_match for a chat file whose gold reply declares no math answer, else gsm8k."},
    )
    output_file: str = field(
        default="evaluation_results.jsonl",
        metadata={"help": "One JSON line per problem; the summary goes to <stem>_summary.json beside it. "
                  "Problems already in this file are skipped (resume)."},
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens generated per problem.", "min": 1})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily; above 0 samples (see --seed).",
                                                      "min": 0, "reason": "0: greedy"})
    seed: int = override(SeedFlags, "seed", help="Random seed for sampling (temperature > 0).")
    max_examples: Optional[int] = field(
        default=None, metadata={"help": "Evaluate only the first N problems of the test file.", "min": 1}
    )
    batch_size: int = field(default=16, metadata={"help": "Problems generated together (left padded).", "min": 1})
    use_test_prompts: bool = field(
        default=False,
        metadata={"help": "Use the test file's own system prompt (none for GSM8K as published) instead of the "
                  "training prompt."},
    )
    bf16: bool = override(PrecisionFlags, "bf16", help="Generate with bf16 weights. " + AUTO_RULE)
    restart: bool = field(
        default=False,
        metadata={"help": "Start over: discard the results already in --output_file (and its summary) instead of "
                  "resuming; needed to evaluate again with other generation settings."},
    )
    compare: list[str] = field(
        default_factory=list,
        metadata={"help": "Evaluate these models (after --model_path, if given) on the same problems and print "
                  "one table; each gets its own output file <stem>_<model><suffix>."},
    )
    debug: int = field(default=1, metadata={
        "help": "0: no per-problem progress bar (a sweep's evaluations run so); 1: the bar. The results line and "
                "the termination line print at both.", "min": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_path and not self.compare:
            raise UsageError("--model_path (or --compare MODEL ...) is required")
        if not self.test_file:
            raise UsageError("--test_file is required")
        if self.task is not None and self.task not in TASKS:
            raise UsageError(f"--task must be one of {', '.join(TASKS)}, got '{self.task}'")
        if len(set(self.model_paths())) != len(self.model_paths()):
            raise UsageError("a model is named twice in --model_path/--compare")

    def model_paths(self) -> list[str]:
        """The models to evaluate, in order: --model_path, then --compare."""
        return ([self.model_path] if self.model_path else []) + list(self.compare)


PROBE_PAIRS = ("first", "all")

TOP_K = 5

# Bases in reverse of their --help order (flag_groups): device, precision, then probe's own flags.
@dataclass
class ProbeConfig(PrecisionFlags, DeviceFlags):
    """Flags of ``stepjepa probe``."""

    model_path: Optional[str] = field(default=None, metadata=_help(
        "Model: a training output directory, a LoRA adapter directory, a hub id, or the embedded alias (required)."))
    test_file: Optional[str] = field(default=None, metadata=_help("Held-out chat JSONL file (required)."))
    mode: str = field(default="step_jepa", metadata=_help(
        "Which views: step_jepa (predictors after step 1 vs step 2 alone) or llm_jepa (user vs assistant)."))
    step_pairs: str = field(default="first", metadata=_help(
        "Step-JEPA pairs: first (step 1 -> step 2) or all (every step -> the next, also reported per pair)."))
    predictors: int = field(default=-1, metadata=_help(
        "K predictor tokens for the K view (-1: as many as the model has; 0: the K=0 view only).",
        min=-1, reason="-1: the model's"))
    output_file: str = field(default="probe.json", metadata=_help(
        "Summary JSON; the plot goes beside it as <stem>.png."))
    max_examples: Optional[int] = field(default=None, metadata=_help(
        "Probe only the first N chats of the file.", min=2, reason="retrieval needs candidates"))
    max_length: int = field(default=512, metadata=_help("Conversation tokens kept (as in training).", min=1))
    batch_size: int = field(default=16, metadata=_help("Chats per forward pass.", min=1))
    bf16: bool = override(PrecisionFlags, "bf16", help="Compute with bf16 weights. " + AUTO_RULE)
    debug: int = field(default=1, metadata=_help("0 quiet (no table, no progress bar), 1 the table."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_path:
            raise UsageError("--model_path is required")
        if not self.test_file:
            raise UsageError("--test_file is required")
        check_mode(self.mode, allowed=PROBE_MODES)
        if self.step_pairs not in PROBE_PAIRS:
            raise UsageError(f"--step_pairs must be one of {', '.join(PROBE_PAIRS)}, got {self.step_pairs!r}")
        if self.step_pairs == "all" and self.mode != "step_jepa":
            raise UsageError("--step_pairs all needs --mode step_jepa (LLM-JEPA has one pair per chat)")
        if Path(self.output_file).is_dir():
            raise UsageError(f"--output_file {self.output_file} is a directory; name a .json file")


PROBE_MODES: tuple[Mode, ...] = ("step_jepa", "llm_jepa")

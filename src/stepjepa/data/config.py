"""The flags of `stepjepa prepare` and `stepjepa validate`."""

from __future__ import annotations

from dataclasses import dataclass, field

from stepjepa.core.errors import UsageError
from stepjepa.data import (
    FORMATS,
)
from stepjepa.data.synthetic import MAX_STEPS, MIN_STEPS
from stepjepa.flag_groups import Flags


@dataclass
class PrepareConfig(Flags):
    """Flags of ``stepjepa prepare``."""

    output: str = field(metadata={"help": "Output JSONL file; <output>.stats.json is written beside it."})
    input: str | None = field(
        default=None, metadata={"help": "Input JSONL file, or a Hugging Face dataset id such as openai/gsm8k."}
    )
    format: str | None = field(
        default=None, metadata={"help": "Input format: gsm8k, trace or chat; detected from the first row when omitted."}
    )
    response_field: str | None = field(
        default=None, metadata={"help": "trace: the field holding the model's solution; deepseek_response or response when omitted."}
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; when omitted the Step-JEPA prompt, and chat rows keep their own."},
    )
    keep_calculator: bool = field(default=False, metadata={"help": "gsm8k: keep the <<a*b=c>> calculator annotations."})
    min_steps: int | None = field(
        default=None, metadata={"help": "Drop rows with fewer steps; when omitted 2 for gsm8k and trace, 1 for chat.",
                                "min": 1}
    )
    model_name: str | None = field(
        default=None, metadata={"help": "Tokenizer for token-length percentiles in the stats (optional)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "With --model_name: count rows whose step 2 ends beyond this many tokens.",
                                "min": 1}
    )
    synthetic: int = field(
        default=0, metadata={"help": "Write this many synthetic arithmetic problems (and a test split beside) instead of reading --input.",
                             "min": 0, "reason": "0: off"}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic generator."})
    synthetic_max_steps: int = field(default=MAX_STEPS, metadata={"help": (
        f"Difficulty of --synthetic: at most this many reasoning steps per problem ({MIN_STEPS}..{MAX_STEPS})."),
        "min": MIN_STEPS, "max": MAX_STEPS})
    force: bool = field(default=False, metadata={"help": "Overwrite an existing output file."})
    hf_config: str | None = field(default=None, metadata={"help": "Hugging Face dataset config (e.g. main for openai/gsm8k)."})
    split: str = field(default="train", metadata={"help": "Hugging Face dataset split."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.input) == bool(self.synthetic):
            raise UsageError("give either --input or --synthetic N")
        if self.synthetic and self.format:
            raise UsageError("--format applies to --input, not to --synthetic")
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"--format {self.format}: expected one of {', '.join(FORMATS)}")
        _check_length_flags(self.model_name, self.max_length)

@dataclass
class ValidateConfig(Flags):
    """Flags of ``stepjepa validate``."""

    file: str = field(metadata={"help": "The chat JSONL file to check."})
    step_jepa: bool = field(default=False, metadata={"help": "Require at least two steps in every assistant message."})
    model_name: str | None = field(default=None, metadata={"help": "Tokenizer for the token-length checks (optional)."})
    max_length: int | None = field(
        default=None, metadata={"help": "With --model_name: report rows whose step 2 ends beyond this many tokens.",
                                "min": 1}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_length_flags(self.model_name, self.max_length)


def _check_length_flags(model_name: str | None, max_length: int | None) -> None:
    if max_length is not None and not model_name:
        raise UsageError("--max_length needs --model_name (lengths are counted in that model's tokens)")

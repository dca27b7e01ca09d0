"""``stepjepa prepare`` and ``stepjepa validate``: GSM8K, reasoning traces and chat files to Step-JEPA chat data.

The conversion lives in :mod:`stepjepa.data` (one module per input format); docs/DATA.md states the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepjepa.data import (
    DEFAULT_SYSTEM_PROMPT,
    FORMATS,
    Conversion,
    convert_records,
    detect_format,
    is_hub_id,
    load_hub_records,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from stepjepa.data.stats import conversion_stats, summary, length_problems, token_counts, token_stats, validate_records
from stepjepa.synthetic import MAX_STEPS, MIN_STEPS, paired_test_path, synthetic_splits


@dataclass
class PrepareConfig:
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
        default=None, metadata={"help": "Drop rows with fewer steps; when omitted 2 for gsm8k and trace, 1 for chat."}
    )
    model_name: str | None = field(
        default=None, metadata={"help": "Tokenizer for token-length percentiles in the stats (optional)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "With --model_name: count rows whose step 2 ends beyond this many tokens."}
    )
    synthetic: int = field(
        default=0, metadata={"help": "Write this many synthetic arithmetic problems (and a test split beside) instead of reading --input."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic generator."})
    synthetic_max_steps: int = field(default=MAX_STEPS, metadata={"help": (
        f"Difficulty of --synthetic: at most this many reasoning steps per problem ({MIN_STEPS}..{MAX_STEPS}).")})
    force: bool = field(default=False, metadata={"help": "Overwrite an existing output file."})
    hf_config: str | None = field(default=None, metadata={"help": "Hugging Face dataset config (e.g. main for openai/gsm8k)."})
    split: str = field(default="train", metadata={"help": "Hugging Face dataset split."})

    def __post_init__(self) -> None:
        if self.synthetic < 0:
            raise ValueError("--synthetic must be 0 (off) or a positive number of rows")
        if bool(self.input) == bool(self.synthetic):
            raise ValueError("give either --input or --synthetic N")
        if not MIN_STEPS <= self.synthetic_max_steps <= MAX_STEPS:
            raise ValueError(f"--synthetic_max_steps must be in {MIN_STEPS}..{MAX_STEPS}, got {self.synthetic_max_steps}")
        if self.synthetic and self.format:
            raise ValueError("--format applies to --input, not to --synthetic")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"--format {self.format}: expected one of {', '.join(FORMATS)}")
        if self.min_steps is not None and self.min_steps < 1:
            raise ValueError("--min_steps must be at least 1")
        _check_length_flags(self.model_name, self.max_length)


@dataclass
class ValidateConfig:
    """Flags of ``stepjepa validate``."""

    file: str = field(metadata={"help": "The chat JSONL file to check."})
    step_jepa: bool = field(default=False, metadata={"help": "Require at least two steps in every assistant message."})
    model_name: str | None = field(default=None, metadata={"help": "Tokenizer for the token-length checks (optional)."})
    max_length: int | None = field(
        default=None, metadata={"help": "With --model_name: report rows whose step 2 ends beyond this many tokens."}
    )

    def __post_init__(self) -> None:
        _check_length_flags(self.model_name, self.max_length)


def _check_length_flags(model_name: str | None, max_length: int | None) -> None:
    if max_length is not None and not model_name:
        raise ValueError("--max_length needs --model_name (lengths are counted in that model's tokens)")
    if max_length is not None and max_length < 1:
        raise ValueError("--max_length must be positive")


def _load_tokenizer(name: str) -> Any:
    from stepjepa.models import load_tokenizer  # transformers is slow to import; only token stats need it

    return load_tokenizer(name)


def _check_outputs(cfg: PrepareConfig) -> list[Path]:
    """The rows file, its stats and (synthetic) the test split; refuses directories and, without --force,
    existing files."""
    output = Path(cfg.output)
    outputs = [output, Path(f"{output}.stats.json")] + ([paired_test_path(output)] if cfg.synthetic else [])
    for path in outputs:
        if path.is_dir():
            raise ValueError(f"{path} is a directory; --output names a file")
    if not cfg.force and output.exists():
        raise ValueError(f"{output} exists; pass --force to overwrite it")
    if not cfg.force and cfg.synthetic and outputs[2].exists():
        raise ValueError(f"{outputs[2]} (the test split) exists; pass --force to overwrite it")
    return outputs


def _convert_input(cfg: PrepareConfig) -> tuple[Conversion, dict[str, Any]]:
    """The input file's (or hub dataset's) rows converted, and the stats fields naming the format."""
    records = load_hub_records(cfg.input, cfg.hf_config, cfg.split) if is_hub_id(cfg.input) else read_records(cfg.input)
    fmt = cfg.format or detect_format(next(v for _, v, error in records if error is None), cfg.response_field)
    conversion = convert_records(records, fmt, response_field=cfg.response_field, system_prompt=cfg.system_prompt,
                                 keep_calculator=cfg.keep_calculator, min_steps=cfg.min_steps)
    if not conversion.rows:
        reasons = "; ".join(f"{reason}: {len(lines)}" for reason, lines in conversion.dropped.items())
        raise ValueError(f"{cfg.input}: no row could be converted as {fmt} ({reasons}); nothing written")
    return conversion, {"format": fmt, "rows_read": len(records)}


def run_prepare(cfg: PrepareConfig) -> int:
    """Convert the input (or generate synthetic data), write rows and stats atomically; returns 0."""
    output, stats_file, *test_file = _check_outputs(cfg)
    # Load the tokenizer first: a bad model name should fail before minutes of conversion.
    tokenizer = _load_tokenizer(cfg.model_name) if cfg.model_name else None
    prompt = cfg.system_prompt or DEFAULT_SYSTEM_PROMPT
    stats: dict[str, Any] = {"input": cfg.input, "output": str(output)}
    if cfg.synthetic:
        train, test = synthetic_splits(cfg.synthetic, cfg.seed, cfg.synthetic_max_steps)
        conversion = Conversion(rows=[p.to_row(prompt) for p in train])
        stats.update(input=f"synthetic (seed {cfg.seed}, at most {cfg.synthetic_max_steps} steps)",
                     format="synthetic", rows_read=len(train))
    else:
        conversion, read = _convert_input(cfg)
        stats.update(read)
    stats.update(conversion_stats(conversion), tokens=None)
    if tokenizer is not None:
        counts = [token_counts(tokenizer, row["messages"]) for row in conversion.rows]
        stats["tokens"] = token_stats(counts, cfg.model_name, cfg.max_length)
    write_jsonl_atomic(output, conversion.rows)
    if cfg.synthetic:
        stats.update(test_output=str(test_file[0]),
                     test_rows=write_jsonl_atomic(test_file[0], [p.to_row(prompt) for p in test]))
    write_json_atomic(stats_file, stats)
    print(summary(stats))
    return 0


def run_validate(cfg: ValidateConfig) -> int:
    """Check a chat file; print every problem with its line number; 0 when clean, 1 when problems were found."""
    records = read_records(cfg.file)
    problems = validate_records(records, cfg.step_jepa)
    lines = []
    if cfg.model_name:
        too_long, lines = length_problems(_load_tokenizer(cfg.model_name), records, cfg.model_name, cfg.max_length)
        problems = sorted(problems + too_long, key=lambda problem: problem[0])
    for number, problem in problems:
        print(f"{cfg.file}:{number}: {problem}")
    if lines:
        print("\n".join(lines))
    bad_rows = len({number for number, _ in problems})
    verdict = "clean" if not problems else f"{len(problems)} problems in {bad_rows} rows"
    print(f"{cfg.file}: {len(records)} rows, {verdict}")
    return 1 if problems else 0

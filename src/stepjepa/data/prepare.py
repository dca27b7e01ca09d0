"""``stepjepa prepare`` and ``stepjepa validate``: GSM8K, reasoning traces and chat files to Step-JEPA chat data.

The conversion lives in :mod:`stepjepa.data` (one module per input format); docs/DATA.md states the rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.data import (
    DEFAULT_SYSTEM_PROMPT,
    Conversion,
    convert_records,
    detect_format,
    is_hub_id,
    load_hub_records,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from stepjepa.data.config import PrepareConfig, ValidateConfig
from stepjepa.data.stats import conversion_stats, length_problems, summary, token_counts, token_stats, validate_records
from stepjepa.data.synthetic import paired_test_path, synthetic_splits


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
            raise UsageError(f"{path} is a directory; --output names a file")
    if not cfg.force and output.exists():
        raise UsageError(f"{output} exists; pass --force to overwrite it")
    if not cfg.force and cfg.synthetic and outputs[2].exists():
        raise UsageError(f"{outputs[2]} (the test split) exists; pass --force to overwrite it")
    return outputs


def _convert_input(cfg: PrepareConfig) -> tuple[Conversion, dict[str, Any]]:
    """The input file's (or hub dataset's) rows converted, and the stats fields naming the format."""
    records = load_hub_records(cfg.input, cfg.hf_config, cfg.split) if is_hub_id(cfg.input) else read_records(cfg.input)
    fmt = cfg.format or detect_format(next(v for _, v, error in records if error is None), cfg.response_field)
    conversion = convert_records(records, fmt, response_field=cfg.response_field, system_prompt=cfg.system_prompt,
                                 keep_calculator=cfg.keep_calculator, min_steps=cfg.min_steps)
    if not conversion.rows:
        reasons = "; ".join(f"{reason}: {len(lines)}" for reason, lines in conversion.dropped.items())
        raise UsageError(f"{cfg.input}: no row could be converted as {fmt} ({reasons}); nothing written")
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

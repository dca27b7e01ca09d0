"""What ``stepjepa prepare`` and ``stepjepa validate`` report about chat rows: step counts, token lengths,
problems per line, and the terminal summary."""

from __future__ import annotations

import math
import sys
from collections import Counter
from typing import Any

from stepjepa.core.steps import split_steps
from stepjepa.data.chat import chat_problem
from stepjepa.data.convert import Conversion
from stepjepa.data.jsonl import Record

PERCENTILES = (50, 90, 95, 99)


def conversion_stats(conversion: Conversion) -> dict[str, Any]:
    """Rows written, dropped (line numbers per reason), changed (rows per change) and steps per example."""
    steps = Counter(row["total_steps"] for row in conversion.rows)
    return {
        "rows_written": len(conversion.rows),
        "dropped": conversion.dropped,
        "changed": dict(conversion.changed),
        "steps_per_example": {str(n): steps[n] for n in sorted(steps)},
    }


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles (the smallest value with at least p% of values at or below it) and the max."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {f"p{p}": ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)] for p in PERCENTILES}
    result["max"] = ordered[-1]
    return result


def token_counts(tokenizer: Any, messages: list[dict]) -> tuple[int, int | None]:
    """Tokens of the chat-formatted conversation, and the token end of step 2 (None below two steps)."""
    from stepjepa.core.tokenization import encode_chat  # imports transformers (seconds); only token counts need it

    encoded = encode_chat(tokenizer, messages, max_length=sys.maxsize)
    step2_end = encoded.step_spans[1][1] if len(encoded.step_spans) >= 2 else None
    return len(encoded.input_ids), step2_end


def token_stats(counts: list[tuple[int, int | None]], model_name: str, max_length: int | None) -> dict:
    """Percentiles of :func:`token_counts`' two numbers over rows; rows whose step 2 ends beyond max_length."""
    ends = [end for _, end in counts if end is not None]
    return {
        "model_name": model_name,
        "conversation_tokens": percentiles([length for length, _ in counts]),
        "step2_end_tokens": percentiles(ends),
        "max_length": max_length,
        "step2_beyond_max_length": None if max_length is None else sum(end > max_length for end in ends),
    }


def token_lines(tokens: dict) -> list[str]:
    """:func:`token_stats` as terminal lines."""

    def show(p: dict) -> str:
        return " ".join(f"{k} {v}" for k, v in p.items()) or "-"

    lines = [
        f"  tokens ({tokens['model_name']}): conversation {show(tokens['conversation_tokens'])}",
        f"  step 2 ends at token: {show(tokens['step2_end_tokens'])}",
    ]
    if tokens["max_length"] is not None:
        lines.append(f"  rows whose step 2 ends beyond max_length {tokens['max_length']}: {tokens['step2_beyond_max_length']}")
    return lines


def summary(stats: dict) -> str:
    """The stats as a few lines for the terminal."""
    dropped = sum(len(lines) for lines in stats["dropped"].values())
    lines = [
        f"prepared {stats['output']} from {stats['input']} (format {stats['format']})",
        f"  rows read {stats['rows_read']}, written {stats['rows_written']}, dropped {dropped}",
    ]
    lines += [f"  dropped, {reason}: {len(numbers)} (lines {_first(numbers)})" for reason, numbers in stats["dropped"].items()]
    lines += [f"  changed, {what}: {count} of {stats['rows_written']} rows" for what, count in stats["changed"].items()]
    lines.append("  steps per example: " + ", ".join(f"{k}: {v}" for k, v in stats["steps_per_example"].items()))
    if "test_output" in stats:
        lines.append(f"  test split: {stats['test_rows']} rows in {stats['test_output']}")
    if stats["tokens"]:
        lines += token_lines(stats["tokens"])
    lines.append(f"  stats: {stats['output']}.stats.json")
    return "\n".join(lines)


def _first(numbers: list[int], shown: int = 10) -> str:
    return ", ".join(map(str, numbers[:shown])) + (", ..." if len(numbers) > shown else "")


def validate_records(records: list[tuple[int, Any, str | None]], step_jepa: bool) -> list[tuple[int, str]]:
    """Every problem of a chat file that needs no tokenizer, as ``(line_number, problem)``."""
    problems = []
    for number, value, error in records:
        problem = error or chat_problem(value)
        if problem:
            problems.append((number, problem))
            continue
        steps = split_steps(value["messages"][-1]["content"])
        declared = value.get("total_steps")
        if declared is not None and declared != len(steps):
            problems.append((number, f"total_steps is {declared} but the assistant message has {len(steps)} steps"))
        if step_jepa and len(steps) < 2:
            problems.append((number, f"fewer than two steps ({len(steps)}); Step-JEPA needs steps 1 and 2"))
    return problems


def length_problems(tokenizer: Any, records: list[Record], model_name: str,
                    max_length: int | None) -> tuple[list[tuple[int, str]], list[str]]:
    """Rows of a chat file whose step 2 ends beyond ``max_length`` tokens, as ``(line_number, problem)``, and the
    token statistics of its good rows as terminal lines."""
    good = [(number, value) for number, value, error in records if error is None and not chat_problem(value)]
    counts = [token_counts(tokenizer, value["messages"]) for _, value in good]
    problems = [] if max_length is None else [
        (number, f"step 2 ends at token {end}, beyond max_length {max_length}")
        for (number, _), (_, end) in zip(good, counts)
        if end is not None and end > max_length
    ]
    return problems, token_lines(token_stats(counts, model_name, max_length))

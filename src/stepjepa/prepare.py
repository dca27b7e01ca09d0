"""``stepjepa prepare`` and ``stepjepa validate``: GSM8K, reasoning traces and chat files to Step-JEPA chat data.

Every output row is ``{"messages": [system, user, assistant], "question", "answer", "total_steps"}``
with the assistant's steps separated by blank lines. docs/DATA.md states the formats and rules.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepjepa.answers import answers_match, last_boxed
from stepjepa.data import DEFAULT_SYSTEM_PROMPT, chat_problem, write_json_atomic, write_jsonl_atomic
from stepjepa.errors import UsageError
from stepjepa.steps import join_steps, split_steps
from stepjepa.synthetic import MAX_STEPS, MIN_STEPS, Problem, boxed_final_step, paired_test_path, synthetic_splits

FORMATS = ("gsm8k", "trace", "chat")
# Fields looked for, in order, when --response_field / the question field is not named.
TRACE_FIELDS = ("deepseek_response", "response")
QUESTION_FIELDS = ("question", "problem")
REFERENCE_FIELDS = ("ground_truth", "answer")
PERCENTILES = (50, 90, 95, 99)

CALCULATOR = re.compile(r"<<[^<>\n]*>>")
THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
# "**Step 2:**", "## Step 2", "Step 2:" open a step; "2." / "2)" do when no "Step N" marker is used.
STEP_MARKER = re.compile(r"[ \t]*(?:#+[ \t]*)?(?:\*\*|__)?[ \t]*step[ \t]*\d+\b", re.IGNORECASE)
NUMBERED_MARKER = re.compile(r"[ \t]*(?:\*\*)?\d+[.)][ \t]")
# A heading of at most three words ending with a colon, alone on its line ("**Solution:**").
HEADING = re.compile(r"[#*_ \t]*[\w']+(?:[ \t]+[\w']+){0,2}[ \t]*:[*_ \t]*")
HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")


class Dropped(Exception):
    """A row left out of the output; the message is the reason counted in the stats."""


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
            raise UsageError("--synthetic must be 0 (off) or a positive number of rows")
        if bool(self.input) == bool(self.synthetic):
            raise UsageError("give either --input or --synthetic N")
        if not MIN_STEPS <= self.synthetic_max_steps <= MAX_STEPS:
            raise UsageError(f"--synthetic_max_steps must be in {MIN_STEPS}..{MAX_STEPS}, got {self.synthetic_max_steps}")
        if self.synthetic and self.format:
            raise UsageError("--format applies to --input, not to --synthetic")
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"--format {self.format}: expected one of {', '.join(FORMATS)}")
        if self.min_steps is not None and self.min_steps < 1:
            raise UsageError("--min_steps must be at least 1")
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
        raise UsageError("--max_length needs --model_name (lengths are counted in that model's tokens)")
    if max_length is not None and max_length < 1:
        raise UsageError("--max_length must be positive")


# ---- reading ---------------------------------------------------------------------------------


def read_records(path: str | Path) -> list[tuple[int, Any, str | None]]:
    """``(line_number, value, error)`` for every non-blank line; a line that is not JSON has value None."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    records = []
    # Split bytes on "\n" only: U+2028 inside a string is not a line end, and a bad byte costs one line.
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig")  # -sig: a byte-order mark from Windows editors is not JSON
        except UnicodeDecodeError:
            records.append((number, None, "not UTF-8 text"))
            continue
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line), None))
        except json.JSONDecodeError as exc:
            records.append((number, None, f"invalid JSON ({exc.msg})"))
    if not records:
        raise UsageError(f"{path}: file is empty")
    if all(error for _, _, error in records):
        raise UsageError(f"{path}: no line is JSON; expected a JSONL file (one JSON object per line)")
    return records


def is_hub_id(text: str) -> bool:
    """Whether ``text`` names a Hugging Face dataset rather than a local file (``owner/name``, not on disk)."""
    return not Path(text).exists() and bool(HUB_ID.fullmatch(text)) and not text.endswith((".json", ".jsonl"))


def load_hub_records(name: str, config: str | None, split: str) -> list[tuple[int, Any, str | None]]:
    """The rows of a Hugging Face dataset split, numbered from 1 like lines."""
    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"{name} is not a local file; loading it from the Hugging Face Hub needs the `datasets` package "
            "(pip install datasets), or download the data and pass the file with --input"
        ) from None
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown id, wrong config or split: the user's next move is the same
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise UsageError(
            f"cannot load {name} (config {config}, split {split}) from the Hugging Face Hub "
            f"({type(exc).__name__}: {reason}); without network, download the data and pass the file with --input"
        ) from None
    return [(number, dict(row), None) for number, row in enumerate(dataset, start=1)]


def detect_format(row: Any, response_field: str | None = None) -> str:
    """``chat``, ``trace`` or ``gsm8k`` from one row's fields; a trace may also carry a GSM8K answer."""
    if isinstance(row, dict):
        if "messages" in row:
            return "chat"
        if (response_field or "") in row or any(name in row for name in TRACE_FIELDS):
            return "trace"
        if isinstance(row.get("answer"), str) and "####" in row["answer"]:
            return "gsm8k"
    fields = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise UsageError(f"cannot tell the input format from the first row ({fields}); pass --format gsm8k, trace or chat")


# ---- converting ------------------------------------------------------------------------------


def unix_newlines(texts: list[str], changes: Counter) -> list[str]:
    """The texts of one row with Windows and old-Mac line endings made ``\\n`` (counted once per row)."""
    if any("\r" in text for text in texts):
        changes["line endings normalised"] += 1
    return [text.replace("\r\n", "\n").replace("\r", "\n") for text in texts]


def _text_field(row: dict, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if isinstance(row.get(name), str) and row[name].strip():
            return row[name]
    raise Dropped(f"no {what}")


def gsm8k_final(text: str) -> str:
    """A ``####`` answer as a bare number: ``' $1,234'`` -> ``'1234'``."""
    return re.sub(r"[\s$,]", "", text)


def gsm8k_problem(row: dict, keep_calculator: bool, changes: Counter) -> Problem:
    """A GSM8K row: each answer line but the last is a step; ``#### N`` becomes ``\\boxed{N}``."""
    texts = [_text_field(row, ("question",), "question"), _text_field(row, ("answer",), "answer")]
    question, answer = unix_newlines(texts, changes)
    lines = [line.strip() for line in answer.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not lines[-1].startswith("####"):
        raise Dropped("no final '#### N' line")
    final = gsm8k_final(lines.pop()[4:])
    if not final:
        raise Dropped("empty '####' answer")
    if not keep_calculator and any(CALCULATOR.search(line) for line in lines):
        changes["calculator annotations removed"] += 1
        lines = [CALCULATOR.sub("", line).strip() for line in lines]
    steps = [line for line in lines if line]
    if len(steps) < len(lines):
        changes["empty lines removed"] += 1
    if not steps:
        raise Dropped("no reasoning steps")
    steps[-1] = boxed_final_step(steps[-1], final)
    return Problem(question.strip(), steps, final)


def strip_think(text: str) -> tuple[str, bool]:
    """The text outside ``<think>`` blocks (nested ones counted; a lone ``</think>`` closes all before it).

    Returns ``(text, removed)``; when nothing but thinking is there, the thinking itself with its tags removed.
    """
    outside, inside, depth, pos = [], [], 0, 0
    for tag in THINK_TAG.finditer(text):
        (inside if depth else outside).append(text[pos : tag.start()])
        pos = tag.end()
        if not tag.group(1):
            depth += 1
        elif depth:
            depth -= 1
        else:
            # R1-style traces often omit the opening tag: all so far was thinking.
            inside, outside = outside + inside, []
    (inside if depth else outside).append(text[pos:])
    kept = "".join(outside)
    if kept.strip():
        return kept, any(part.strip() for part in inside)
    return "".join(inside), False


def _trivial(paragraph: str) -> bool:
    """No letter or digit (rules, stray markup), or a lone short heading ending with a colon."""
    return not re.search(r"[^\W_]", paragraph) or bool(HEADING.fullmatch(paragraph))


def trace_steps(text: str, changes: Counter) -> list[str]:
    """Steps of a model-written solution: paragraphs, continuation paragraphs merged into their step.

    ``Step N`` markers (else ``N.`` markers) open steps; a paragraph without a marker after one is
    a continuation, joined to its step by a single newline; without markers every paragraph is a
    step. Trivial paragraphs (see :func:`_trivial`) are dropped.
    """
    paragraphs = split_steps(text)
    marker = next((m for m in (STEP_MARKER, NUMBERED_MARKER) if any(m.match(p) for p in paragraphs)), None)
    steps: list[str] = []
    opened = False
    for paragraph in paragraphs:
        if marker is not None and marker.match(paragraph):
            steps.append(paragraph)
            opened = True
        elif _trivial(paragraph):
            changes["trivial fragments dropped"] += 1
        elif opened:
            steps[-1] += "\n" + paragraph
            changes["continuation paragraphs merged"] += 1
        else:
            steps.append(paragraph)
    return steps


def reference_answer(row: dict) -> str | None:
    """The row's own final answer (``ground_truth``, else ``answer``; a ``####`` line is parsed), or None."""
    for name in REFERENCE_FIELDS:
        value = row.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip():
            hashes = re.findall(r"####([^\n]*)", value)
            return gsm8k_final(hashes[-1]) if hashes else value.strip()
    return None


def trace_problem(row: dict, response_field: str, changes: Counter) -> Problem:
    """A model-written trace: ``<think>`` removed, steps found, final answer from ``\\boxed{}`` or the reference."""
    question, response = unix_newlines(
        [_text_field(row, QUESTION_FIELDS, "question"), _text_field(row, (response_field,), f"'{response_field}' text")], changes
    )
    question = question.strip()
    text, removed = strip_think(response)
    if removed:
        changes["think blocks removed"] += 1
    steps = trace_steps(text, changes)
    if not steps:
        raise Dropped("no reasoning steps")
    boxed, reference = last_boxed(join_steps(steps)), reference_answer(row)
    if boxed is None:
        if reference is None:
            raise Dropped("no final answer (no \\boxed{} and no reference answer)")
        steps[-1] = boxed_final_step(steps[-1], reference)
        changes["boxed answer appended"] += 1
        return Problem(question, steps, reference)
    if reference is not None and boxed.strip() != reference and not answers_match(boxed, reference):
        raise Dropped("boxed answer differs from the reference answer")
    return Problem(question, steps, boxed.strip())


def chat_row(row: Any, system_prompt: str | None, changes: Counter) -> dict:
    """A chat row normalised: line endings, blank-line separators, the system prompt added or replaced."""
    problem = chat_problem(row)
    if problem:
        raise Dropped(problem)
    contents = unix_newlines([m["content"] for m in row["messages"]], changes)
    messages = [{"role": m["role"], "content": content} for m, content in zip(row["messages"], contents)]
    assistant = messages[-1]
    steps = split_steps(assistant["content"])
    if join_steps(steps) != assistant["content"]:
        changes["step separators normalised"] += 1
        assistant["content"] = join_steps(steps)
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt or DEFAULT_SYSTEM_PROMPT})
        changes["system prompt added"] += 1
    elif system_prompt is not None and messages[0]["content"] != system_prompt:
        messages[0]["content"] = system_prompt
        changes["system prompt replaced"] += 1
    given = row.get("answer")
    answer = given.strip() if isinstance(given, str) and given.strip() else last_boxed(assistant["content"])
    return {
        "messages": messages,
        "question": messages[1]["content"],
        # Without an answer field or a boxed answer (e.g. text-to-code data), the last step is the answer.
        "answer": answer.strip() if answer is not None else steps[-1],
        "total_steps": len(steps),
    }


@dataclass
class Conversion:
    """What :func:`convert_records` kept, dropped (line numbers per reason) and changed (rows per change)."""

    rows: list[dict] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    changed: Counter = field(default_factory=Counter)


def convert_records(records: list[tuple[int, Any, str | None]], fmt: str, cfg: PrepareConfig) -> Conversion:
    """Convert every record; rows that cannot be converted are dropped with their reason and line number."""
    first = next(value for _, value, error in records if error is None)
    fields = first if isinstance(first, dict) else {}
    response_field = cfg.response_field or next((name for name in TRACE_FIELDS if name in fields), None)
    if fmt == "trace" and response_field is None:
        raise UsageError(f"trace format: no {' or '.join(TRACE_FIELDS)} field; name it with --response_field")
    min_steps = cfg.min_steps or (1 if fmt == "chat" else 2)
    prompt = cfg.system_prompt or DEFAULT_SYSTEM_PROMPT
    result = Conversion()
    for number, value, error in records:
        changes: Counter = Counter()  # counted only for rows that are kept
        try:
            if error:
                raise Dropped(error)
            if fmt == "chat":
                row = chat_row(value, cfg.system_prompt, changes)
            elif not isinstance(value, dict):
                raise Dropped("not a JSON object")
            elif fmt == "gsm8k":
                row = gsm8k_problem(value, cfg.keep_calculator, changes).to_row(prompt)
            else:
                row = trace_problem(value, response_field, changes).to_row(prompt)
            if row["total_steps"] < min_steps:
                raise Dropped(f"fewer than {min_steps} steps")
            result.rows.append(row)
            result.changed.update(changes.keys())  # rows with each change, not occurrences
        except Dropped as reason:
            result.dropped.setdefault(str(reason), []).append(number)
    return result


# ---- statistics ------------------------------------------------------------------------------


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
    from stepjepa.tokenization import encode_chat  # imports transformers (seconds); only token counts need it

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


def _load_tokenizer(name: str) -> Any:
    from stepjepa.models import load_tokenizer  # transformers is slow to import; only token stats need it

    return load_tokenizer(name)


def _token_lines(tokens: dict) -> list[str]:
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
        lines += _token_lines(stats["tokens"])
    lines.append(f"  stats: {stats['output']}.stats.json")
    return "\n".join(lines)


def _first(numbers: list[int], shown: int = 10) -> str:
    return ", ".join(map(str, numbers[:shown])) + (", ..." if len(numbers) > shown else "")


# ---- commands --------------------------------------------------------------------------------


def run_prepare(cfg: PrepareConfig) -> int:
    """Convert the input (or generate synthetic data), write rows and stats atomically; returns 0."""
    output = Path(cfg.output)
    outputs = [output, Path(f"{output}.stats.json")] + ([paired_test_path(output)] if cfg.synthetic else [])
    if not cfg.force and output.exists():
        raise UsageError(f"{output} exists; pass --force to overwrite it")
    if not cfg.force and cfg.synthetic and outputs[2].exists():
        raise UsageError(f"{outputs[2]} (the test split) exists; pass --force to overwrite it")
    # Load the tokenizer first: a bad model name should fail before minutes of conversion.
    tokenizer = _load_tokenizer(cfg.model_name) if cfg.model_name else None
    stats: dict[str, Any] = {"input": cfg.input, "output": str(output)}
    if cfg.synthetic:
        train, test = synthetic_splits(cfg.synthetic, cfg.seed, cfg.synthetic_max_steps)
        prompt = cfg.system_prompt or DEFAULT_SYSTEM_PROMPT
        conversion = Conversion(rows=[p.to_row(prompt) for p in train])
        stats.update(input=f"synthetic (seed {cfg.seed}, at most {cfg.synthetic_max_steps} steps)", format="synthetic", rows_read=len(train))
    else:
        if is_hub_id(cfg.input):
            records = load_hub_records(cfg.input, cfg.hf_config, cfg.split)
        else:
            records = read_records(cfg.input)
        fmt = cfg.format or detect_format(next(v for _, v, error in records if error is None), cfg.response_field)
        conversion = convert_records(records, fmt, cfg)
        stats.update(format=fmt, rows_read=len(records))
        if not conversion.rows:
            reasons = "; ".join(f"{reason}: {len(lines)}" for reason, lines in conversion.dropped.items())
            raise UsageError(f"{cfg.input}: no row could be converted as {fmt} ({reasons}); nothing written")
    rows = conversion.rows
    steps = Counter(row["total_steps"] for row in rows)
    stats.update(
        rows_written=len(rows),
        dropped=conversion.dropped,
        changed=dict(conversion.changed),
        steps_per_example={str(n): steps[n] for n in sorted(steps)},
        tokens=None,
    )
    if tokenizer is not None:
        counts = [token_counts(tokenizer, row["messages"]) for row in rows]
        stats["tokens"] = token_stats(counts, cfg.model_name, cfg.max_length)
    write_jsonl_atomic(output, rows)
    if cfg.synthetic:
        stats.update(test_output=str(outputs[2]), test_rows=write_jsonl_atomic(outputs[2], [p.to_row(prompt) for p in test]))
    write_json_atomic(outputs[1], stats)
    print(summary(stats))
    return 0


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


def run_validate(cfg: ValidateConfig) -> int:
    """Check a chat file; print every problem with its line number; 0 when clean, 1 when problems were found."""
    records = read_records(cfg.file)
    problems = validate_records(records, cfg.step_jepa)
    token_lines = []
    if cfg.model_name:
        tokenizer = _load_tokenizer(cfg.model_name)
        good = [(number, value) for number, value, error in records if error is None and not chat_problem(value)]
        counts = [token_counts(tokenizer, value["messages"]) for _, value in good]
        if cfg.max_length is not None:
            problems += [
                (number, f"step 2 ends at token {end}, beyond max_length {cfg.max_length}")
                for (number, _), (_, end) in zip(good, counts)
                if end is not None and end > cfg.max_length
            ]
            problems.sort(key=lambda problem: problem[0])
        token_lines = _token_lines(token_stats(counts, cfg.model_name, cfg.max_length))
    for number, problem in problems:
        print(f"{cfg.file}:{number}: {problem}")
    if token_lines:
        print("\n".join(token_lines))
    bad_rows = len({number for number, _ in problems})
    verdict = "clean" if not problems else f"{len(problems)} problems in {bad_rows} rows"
    print(f"{cfg.file}: {len(records)} rows, {verdict}")
    return 1 if problems else 0

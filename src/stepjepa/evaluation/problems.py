"""Test problems of ``stepjepa evaluate``: GSM8K as published or chat JSONL, read for a task (see
:mod:`stepjepa.evaluation.tasks`): the prompt messages and the gold answer of each."""

from __future__ import annotations

from dataclasses import dataclass

from stepjepa.core.errors import UsageError
from stepjepa.data.chat import DEFAULT_SYSTEM_PROMPT
from stepjepa.data.jsonl import read_jsonl
from stepjepa.evaluation.tasks import gold_answer


@dataclass(frozen=True)
class Problem:
    """One test problem: its prompt (the chat before the gold reply) and the gold answer replies are scored against."""

    index: int
    question: str
    messages: list[dict[str, str]]
    ground_truth: str
    gt_answer: str


def _prompt(system: str | None, question: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}]


def _messages(row: dict) -> list[dict[str, str]]:
    """A chat row's messages; ValueError unless they are a list of {role, content} with string content."""
    messages = row["messages"]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise UsageError("'messages' must be a list of {role, content} with string content")
    return messages


def _chat_problem(row: dict, use_test_prompts: bool) -> tuple[str, list[dict[str, str]], str | None]:
    """``(question, prompt messages, ground truth text or None)`` of a chat row; raises ValueError if malformed."""
    messages = _messages(row)
    roles = [m["role"] for m in messages]
    before_reply = messages[: roles.index("assistant")] if "assistant" in roles else messages
    users = [m["content"] for m in before_reply if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise UsageError("no user message before the assistant's")
    systems = [m["content"] for m in before_reply if m["role"] == "system"]
    system = (systems[0] if systems else None) if use_test_prompts else DEFAULT_SYSTEM_PROMPT
    if "answer" in row:
        truth = str(row["answer"])
    else:
        truth = next((m["content"] for m in messages if m["role"] == "assistant"), None)
    return users[-1], _prompt(system, users[-1]), truth


def _reply_problem(row: dict) -> tuple[str, list[dict[str, str]], str | None]:
    """``(question, prompt, gold reply)`` of a chat for exact_match/regex: every message before the last
    assistant message, verbatim (its own system prompt), and that message."""
    messages = _messages(row)
    roles = [m["role"] for m in messages]
    last = len(roles) - 1 - roles[::-1].index("assistant") if "assistant" in roles else len(roles)
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise UsageError("no user message before the assistant's")
    return users[-1], prompt, messages[last]["content"] if last < len(messages) else None


def load_problems(path: str, use_test_prompts: bool = False, task: str = "gsm8k") -> list[Problem]:
    """The problems of a GSM8K or chat JSONL file for ``task``, indexed by their order in the file.

    gsm8k prompts use the training system prompt unless ``use_test_prompts``; exact_match and
    regex prompts are the chat's own messages.
    """
    problems = []
    for index, (line, row) in enumerate(read_jsonl(path)):
        try:
            if not isinstance(row, dict):
                raise UsageError("expected a JSON object")
            if "messages" in row and task != "gsm8k":
                question, messages, truth = _reply_problem(row)
            elif "messages" in row:
                question, messages, truth = _chat_problem(row, use_test_prompts)
            elif isinstance(row.get("question"), str) and "answer" in row:
                question, truth = row["question"], str(row["answer"])
                messages = _prompt(None if use_test_prompts else DEFAULT_SYSTEM_PROMPT, question)
            else:
                raise UsageError("expected {question, answer} (GSM8K) or {messages} (chat)")
            gt_answer = gold_answer(task, truth)
        except ValueError as exc:
            raise UsageError(f"{path}:{line}: {exc}") from None
        problems.append(Problem(index, question, messages, truth, gt_answer))
    return problems

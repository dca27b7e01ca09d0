"""Chat rows (``{"messages": [system?, user, assistant]}``): checking, loading, and the chat converter."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from stepjepa.core.errors import UsageError
from stepjepa.core.steps import join_steps, split_steps
from stepjepa.data.answers import last_boxed
from stepjepa.data.fields import Dropped, unix_newlines
from stepjepa.data.jsonl import read_jsonl

# The reference Step-JEPA system prompt: step by step, blank-line separated steps, boxed answer.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that solves math problems step by step. "
    "Separate each reasoning step with a blank line. "
    "Put the final answer in \\boxed{}."
)

ROLES = ("system", "user", "assistant")


def chat_problem(row: Any) -> str | None:
    """What is wrong with one chat row, or None: messages are system?, user, assistant with string content."""
    if not isinstance(row, dict) or "messages" not in row:
        return "no 'messages' field"
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return "'messages' is not a non-empty list"
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return "a message lacks 'role' or 'content'"
        if not isinstance(message["content"], str):
            return f"{message['role']} content is not a string"
        if not message["content"].strip():
            return f"{message['role']} content is empty"
    roles = [m["role"] for m in messages]
    if roles not in (["system", "user", "assistant"], ["user", "assistant"]):
        return f"roles are {roles}, expected [system,] user, assistant"
    return None


def load_chats(path: str | os.PathLike) -> list[list[dict[str, str]]]:
    """The messages of every row of a chat JSONL file; the first bad row raises ValueError with its line."""
    chats = []
    for number, row in read_jsonl(path):
        problem = chat_problem(row)
        if problem:
            raise UsageError(f"{path}:{number}: {problem}")
        chats.append([{"role": m["role"], "content": m["content"]} for m in row["messages"]])
    return chats


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

"""From chats to packed training rows for a mode, counting what each example could train."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from stepjepa.core.errors import UsageError
from stepjepa.core.layout import NO_VIEW, pack_llm_jepa, pack_regular, pack_step_jepa, step_pair_numbers
from stepjepa.core.modes import MODES
from stepjepa.core.tokenization import IGNORE_INDEX, encode_chat, encode_view


@dataclass(frozen=True)
class RowSettings:
    """Everything besides the chat and the tokenizer that shapes a packed row (and so keys the row cache): the mode
    (regular, llm_jepa, step_jepa), the K predictor token ids, LLM-JEPA's ``last_token`` offset (None: the view's
    last content token), the conversation's ``max_length`` and Step-JEPA's ``step_pairs``."""

    mode: str
    predictor_ids: tuple[int, ...]
    last_token: int | None
    max_length: int
    step_pairs: str = "first"


def pack_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], settings: RowSettings) -> dict[str, Any]:
    """One chat -> one packed row as ``settings`` say."""
    mode, predictor_ids, last_token = settings.mode, list(settings.predictor_ids), settings.last_token
    max_length, step_pairs = settings.max_length, settings.step_pairs
    chat = encode_chat(tokenizer, messages, max_length)
    if mode == "step_jepa":
        row = pack_step_jepa(chat, predictor_ids, step_pair_numbers(chat, step_pairs))
    elif mode == "llm_jepa":
        user = next(m for m in messages if m["role"] == "user")
        user_view = encode_view(tokenizer, user, max_length)
        assistant_view = encode_view(tokenizer, messages[-1], max_length)
        row = pack_llm_jepa(chat, user_view, assistant_view, predictor_ids, last_token)
    elif mode == "regular":
        row = pack_regular(chat)
    else:
        raise UsageError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    row["truncated"] = chat.truncated
    row["num_steps"] = len(chat.step_spans)
    return row


def build_rows(tokenizer: PreTrainedTokenizerBase, chats: list[list[dict]],
               settings: RowSettings) -> tuple[list[dict[str, Any]], Counter]:
    """Packed rows of every usable chat and counts: ``rows``, ``jepa``, ``pairs``, ``lm_only_few_steps``,
    ``lm_only_truncated``, ``dropped_no_labels``, ``truncated``. Each row keeps its chat's ``example_index``
    (``--step_pairs random`` draws from it).
    """
    rows, counts = [], Counter()
    for example_index, messages in enumerate(chats):
        row = pack_chat(tokenizer, messages, settings)
        row["example_index"] = example_index
        if all(label == IGNORE_INDEX for label in row["labels"]):
            counts["dropped_no_labels"] += 1
            continue
        counts["truncated"] += row["truncated"]
        if settings.mode != "regular":
            if row["view_a_index"] != NO_VIEW:
                counts["jepa"] += 1
                counts["pairs"] += len(row["view_pairs"])
            elif row["truncated"]:
                counts["lm_only_truncated"] += 1
            else:
                counts["lm_only_few_steps"] += 1
        rows.append(row)
    counts["rows"] = len(rows)
    if not rows:
        raise UsageError(f"--max_length {settings.max_length} leaves no assistant token in any example")
    return rows, counts

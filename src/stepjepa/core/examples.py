"""From chats to packed training rows for a mode, counting what each example could train."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
    rows = []
    for example_index, messages in enumerate(chats):
        row = pack_chat(tokenizer, messages, settings)
        row["example_index"] = example_index
        if any(label != IGNORE_INDEX for label in row["labels"]):
            rows.append(row)
    counts = row_counts(len(chats), settings.mode, [row["truncated"] for row in rows],
                        [row["view_a_index"] != NO_VIEW for row in rows], sum(len(row["view_pairs"]) for row in rows))
    if not rows:
        raise UsageError(f"--max_length {settings.max_length} leaves no assistant token in any example")
    return rows, counts


def row_counts(examples: int, mode: str, truncated: Sequence[bool], has_view: Sequence[bool], pairs: int) -> Counter:
    """What ``examples`` chats train, from the flags of the rows kept (those with an assistant token): ``rows``,
    ``truncated``, ``dropped_no_labels``, and in a JEPA mode ``jepa`` (rows with a view pair), ``pairs``,
    ``lm_only_truncated``, ``lm_only_few_steps`` (LM-only rows, cut by --max_length or with too few steps). A key
    is present only where it counts something (``truncated``: whenever a row is kept); the row cache counts its stored columns with it too."""
    truncated, has_view = np.asarray(truncated, dtype=bool), np.asarray(has_view, dtype=bool)
    counts = Counter(rows=len(truncated))
    if len(truncated):
        counts["truncated"] = int(truncated.sum())  # present, 0 included, whenever a row is kept
    found = {"dropped_no_labels": examples - len(truncated)}
    if mode != "regular":
        found.update(jepa=int(has_view.sum()), pairs=pairs, lm_only_truncated=int((~has_view & truncated).sum()),
                     lm_only_few_steps=int((~has_view & ~truncated).sum()))
    counts.update({key: value for key, value in found.items() if value})
    return counts

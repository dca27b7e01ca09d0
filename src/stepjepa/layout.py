"""The packed single-pass layout: conversation and view blocks in one row, their positions and attention mask.

A packed row is ``[conversation][view blocks]``. Token ``i`` may attend to token ``j`` iff ``j <= i`` and
either ``j >= block_start[i]`` (causal inside its own block) or ``j < context_end[i]`` (a prefix of the
conversation it is allowed to see). Conversation tokens have ``block_start = 0``: the plain causal mask.
Everything here is pure: lists and tensors in, lists and tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from stepjepa.tokenization import IGNORE_INDEX, EncodedChat, EncodedView

MODES = ("regular", "llm_jepa", "step_jepa")
NO_VIEW = -1


def _block(ids: list[int], start: int, positions: list[int], context_end: int, region: str) -> dict[str, list]:
    return {
        "input_ids": list(ids),
        "labels": [IGNORE_INDEX] * len(ids),
        "position_ids": positions,
        "block_start": [start] * len(ids),
        "context_end": [context_end] * len(ids),
        "regions": [region] * len(ids),
    }


def conversation_regions(chat: EncodedChat) -> list[str]:
    """A region name per conversation token: prompt, step_1, step_2, ..., end_of_turn."""
    regions = ["prompt"] * chat.prompt_length + ["assistant"] * (len(chat.input_ids) - chat.prompt_length)
    for number, (start, end) in enumerate(chat.step_spans, start=1):
        regions[start:end] = [f"step_{number}"] * (end - start)
    last_label = max((i for i, label in enumerate(chat.labels) if label != IGNORE_INDEX), default=-1)
    if last_label >= 0 and regions[last_label] == "assistant":
        regions[last_label] = "end_of_turn"
    return regions


def _packed(chat: EncodedChat, blocks: list[dict[str, list]], view_a: int, view_b: int) -> dict[str, Any]:
    length = len(chat.input_ids)
    row = {
        "input_ids": list(chat.input_ids),
        "labels": list(chat.labels),
        "position_ids": list(range(length)),
        "block_start": [0] * length,
        "context_end": [0] * length,
        "regions": conversation_regions(chat),
    }
    for block in blocks:
        for key, values in block.items():
            row[key].extend(values)
    row.update(conversation_length=length, view_a_index=view_a, view_b_index=view_b)
    return row


def pack_regular(chat: EncodedChat) -> dict[str, Any]:
    """The conversation alone: LM loss only."""
    return _packed(chat, [], NO_VIEW, NO_VIEW)


def has_step_views(chat: EncodedChat) -> bool:
    """Step-JEPA needs whole steps 1 and 2 (after truncation)."""
    return len(chat.step_spans) >= 2


def pack_step_jepa(chat: EncodedChat, predictor_ids: list[int]) -> dict[str, Any]:
    """Conversation + K predictors after step 1 (they see system..step 1) + an isolated copy of step 2.

    view_a: the last predictor (K > 0) or step 1's last token (K = 0, identity predictor);
    view_b: the last token of the step 2 copy. Without two whole steps: LM only.
    """
    if not has_step_views(chat):
        return pack_regular(chat)
    length = len(chat.input_ids)
    (_, step1_end), (step2_start, step2_end) = chat.step_spans[0], chat.step_spans[1]
    k = len(predictor_ids)
    # Predictors continue step 1's positions, as if inserted right after it.
    predictors = _block(predictor_ids, length, list(range(step1_end, step1_end + k)), step1_end, "predictor")
    step2 = chat.input_ids[step2_start:step2_end]
    copy = _block(step2, length + k, list(range(len(step2))), 0, "step_2_copy")
    view_a = length + k - 1 if k else step1_end - 1
    return _packed(chat, [predictors, copy], view_a, length + k + len(step2) - 1)


def _view_index(view_length: int, last_content_index: int, num_predictors: int, last_token: int | None) -> int:
    """Index of a view's embedding: its last content token (``last_token`` None) or ``len + last_token``."""
    if last_token is None:
        return last_content_index + num_predictors if last_content_index >= 0 else NO_VIEW
    index = view_length + last_token
    return index if 0 <= index < view_length else NO_VIEW


def pack_llm_jepa(
    chat: EncodedChat,
    user_view: EncodedView,
    assistant_view: EncodedView,
    predictor_ids: list[int],
    last_token: int | None,
) -> dict[str, Any]:
    """Conversation + the user message alone (K predictors after its content) + the assistant message alone.

    Each view block sees only itself and starts at position 0, as in its own forward pass.
    """
    length = len(chat.input_ids)
    cut = user_view.last_content_index + 1 if user_view.last_content_index >= 0 else len(user_view.input_ids)
    user_ids = user_view.input_ids[:cut] + list(predictor_ids) + user_view.input_ids[cut:]
    user = _block(user_ids, length, list(range(len(user_ids))), 0, "user_view")
    user["regions"][cut : cut + len(predictor_ids)] = ["predictor"] * len(predictor_ids)
    assistant = _block(
        assistant_view.input_ids, length + len(user_ids), list(range(len(assistant_view.input_ids))), 0, "assistant_view"
    )
    view_a = _view_index(len(user_ids), user_view.last_content_index, len(predictor_ids), last_token)
    view_b = _view_index(len(assistant_view.input_ids), assistant_view.last_content_index, 0, last_token)
    if view_a == NO_VIEW or view_b == NO_VIEW:
        return pack_regular(chat)
    return _packed(chat, [user, assistant], length + view_a, length + len(user_ids) + view_b)


def allowed_attention(block_start: torch.Tensor, context_end: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, T, T)``: may query ``i`` attend to key ``j``; from ``(B, T)`` block starts and context ends."""
    index = torch.arange(block_start.shape[-1], device=block_start.device)
    query, key = index[:, None], index[None, :]  # (T, 1), (1, T)
    causal = key <= query
    in_block = key >= block_start[:, :, None]
    in_context = key < context_end[:, :, None]
    return causal & (in_block | in_context)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, T, T)`` booleans -> ``(B, 1, T, T)`` additive mask: 0 where allowed, -inf elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, float("-inf"))[:, None]


@dataclass
class PackedCollator:
    """Pads packed rows into a batch: conversations left-aligned to the batch's longest, view blocks after.

    Aligning the conversation region lets the LM head run on it alone; padding tokens see only themselves.

    >>> batch = PackedCollator(pad_token_id=0)([pack_regular(EncodedChat([5, 6, 7], [-100, 6, 7], 1, [], False))])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].shape
    ([[5, 6, 7]], torch.Size([1, 1, 3, 3]))
    """

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(row["conversation_length"] for row in rows)
        tail = max(len(row["input_ids"]) - row["conversation_length"] for row in rows)
        total = width + tail
        batch = {
            "input_ids": torch.full((len(rows), total), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), total), IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros((len(rows), total), dtype=torch.long),
            "block_start": torch.arange(total).repeat(len(rows), 1),
            "context_end": torch.zeros((len(rows), total), dtype=torch.long),
        }
        view_a, view_b = [], []
        for b, row in enumerate(rows):
            length, shift = row["conversation_length"], width - row["conversation_length"]
            size = len(row["input_ids"])
            for key in ("input_ids", "labels", "position_ids", "context_end"):
                values = torch.tensor(row[key], dtype=torch.long)
                batch[key][b, :length] = values[:length]
                batch[key][b, width : width + size - length] = values[length:]
            starts = torch.tensor(row["block_start"], dtype=torch.long)
            batch["block_start"][b, :length] = starts[:length]
            batch["block_start"][b, width : width + size - length] = starts[length:] + shift
            view_a.append(self._shift(row["view_a_index"], length, shift))
            view_b.append(self._shift(row["view_b_index"], length, shift))
        batch["attention_mask"] = additive_mask(allowed_attention(batch["block_start"], batch["context_end"]))
        batch["view_a_index"] = torch.tensor(view_a, dtype=torch.long)
        batch["view_b_index"] = torch.tensor(view_b, dtype=torch.long)
        batch["conversation_width"] = torch.tensor(width, dtype=torch.long)
        batch["num_tokens"] = torch.tensor(sum(row["conversation_length"] for row in rows), dtype=torch.long)
        return batch

    @staticmethod
    def _shift(index: int, length: int, shift: int) -> int:
        return index + shift if index >= length else index


def conversation_only(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its view blocks (an LM-only step): the leading conversation region."""
    width = int(batch["conversation_width"])
    sliced = dict(batch)
    for key in ("input_ids", "labels", "position_ids", "block_start", "context_end"):
        sliced[key] = batch[key][:, :width]
    sliced["attention_mask"] = batch["attention_mask"][:, :, :width, :width]
    sliced["view_a_index"] = torch.full_like(batch["view_a_index"], NO_VIEW)
    sliced["view_b_index"] = torch.full_like(batch["view_b_index"], NO_VIEW)
    return sliced


def render_layout(tokens: list[str], row: dict[str, Any], allowed: torch.Tensor) -> str:
    """A readable picture of one packed row: index, position, region, token, and its mask row (``#`` = may attend)."""
    lines = [f"{'idx':>4} {'pos':>4} {'region':<14} {'token':<16} mask"]
    for i, token in enumerate(tokens):
        marks = "".join("#" if allowed[i, j] else "." for j in range(len(tokens)))
        lines.append(f"{i:>4} {row['position_ids'][i]:>4} {row['regions'][i]:<14} {token!r:<16.16} {marks}")
    lines.append(f"view_a index {row['view_a_index']}, view_b index {row['view_b_index']}")
    return "\n".join(lines)

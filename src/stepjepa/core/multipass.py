"""The JEPA objective computed the straightforward way: one batched forward pass per view.

The baseline the bench times against the packed single pass, and a second computation of the same losses.
It is built from the packed rows themselves (:func:`stepjepa.core.examples.pack_chat`): each view block becomes a
sequence of its own, the conversation prefix the block may see (its ``context_end``) followed by the whole
block, so a plain causal pass computes every token of it as the packed attention mask lets the packed pass.
The conversations run as one batch (LM loss), every pair's view_a as a second, every view_b as a third; each
batch is padded on the right to its own longest sequence. A view_a inside the conversation (Step-JEPA with
K = 0, the identity predictor) is read from the conversation pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from stepjepa.core.losses import jepa_loss, lm_loss
from stepjepa.core.objective import Objective, ObjectiveOutput, lm_window
from stepjepa.core.tokenization import IGNORE_INDEX


def view_sequence(row: dict[str, Any], index: int) -> tuple[list[int], int]:
    """The sequence whose plain causal pass computes token ``index`` of a packed ``row`` as the packed pass
    does, and the token's place in it: the conversation tokens its block may see, then its whole block.
    """
    start, context_end = row["block_start"][index], row["context_end"][index]
    end = start
    while end < len(row["input_ids"]) and row["block_start"][end] == start:
        end += 1
    return row["input_ids"][:context_end] + row["input_ids"][start:end], context_end + index - start


def _right_pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    """``(B, T)``: the sequences padded on the right with ``value`` to the longest."""
    return pad_sequence([torch.tensor(s, dtype=torch.long) for s in sequences], batch_first=True,
                        padding_value=value)


def _padded_views(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, T)`` ids padded on the right, and their ``(N, T)`` 0/1 attention mask."""
    return _right_pad(sequences, pad_token_id), _right_pad([[1] * len(s) for s in sequences], 0)


def multipass_batch(rows: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Separately padded batches of packed ``rows``: the conversations, the view_a and the view_b sequences.

    ``view_rows (P,)`` is the conversation of each JEPA pair, in row order; ``view_a_index``/``view_b_index``
    ``(P,)`` locate each embedding in its own sequence; without ``view_a_ids`` (the identity predictor) view_a
    is read from the conversation pass at ``view_a_index``.
    """
    conversations = [row["input_ids"][: row["conversation_length"]] for row in rows]
    input_ids, attention_mask = _padded_views(conversations, pad_token_id)
    labels = _right_pad([row["labels"][: row["conversation_length"]] for row in rows], IGNORE_INDEX)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
             "num_tokens": torch.tensor(sum(map(len, conversations)))}
    pairs = [(b, view_a, view_b) for b, row in enumerate(rows) for view_a, view_b in row["view_pairs"]]
    batch["view_rows"] = torch.tensor([b for b, _, _ in pairs], dtype=torch.long)
    if not pairs:
        return batch
    # The layout puts either every view_a in its conversation (identity predictor) or none.
    if pairs[0][1] < rows[pairs[0][0]]["conversation_length"]:
        batch["view_a_index"] = torch.tensor([view_a for _, view_a, _ in pairs])
    else:
        a_sequences, a_index = zip(*(view_sequence(rows[b], view_a) for b, view_a, _ in pairs))
        batch["view_a_ids"], batch["view_a_mask"] = _padded_views(list(a_sequences), pad_token_id)
        batch["view_a_index"] = torch.tensor(a_index)
    b_sequences, b_index = zip(*(view_sequence(rows[b], view_b) for b, _, view_b in pairs))
    batch["view_b_ids"], batch["view_b_mask"] = _padded_views(list(b_sequences), pad_token_id)
    batch["view_b_index"] = torch.tensor(b_index)
    return batch


def _view_hidden(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(N, D)``: the last-layer hidden state of each row at ``index`` in a plain causal pass over the views."""
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    return out.hidden_states[-1][torch.arange(len(ids), device=ids.device), index]  # (N, D)


def multipass_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                        objective: Objective) -> ObjectiveOutput:
    """``gamma * LM + lbd * JEPA`` by one forward pass per view (see :func:`multipass_batch`): the packed
    pass's output, equal to it up to float rounding. The LM head runs on the labelled window only, as there.
    """
    rows = batch["view_rows"]
    identity = len(rows) > 0 and "view_a_ids" not in batch
    lo, hi = lm_window(batch["labels"])
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
        output_hidden_states=identity, logits_to_keep=torch.arange(lo, hi, device=batch["input_ids"].device),
    )
    lm = lm_loss(out.logits, batch["labels"][:, lo + 1 : hi + 1])  # logits (B, hi-lo, V)
    if len(rows) == 0:
        return ObjectiveOutput(objective.gamma * lm, lm, None, None, None)
    if identity:
        view_a = out.hidden_states[-1][rows, batch["view_a_index"]]  # (P, D)
    else:
        view_a = _view_hidden(model, batch["view_a_ids"], batch["view_a_mask"], batch["view_a_index"])
    view_b = _view_hidden(model, batch["view_b_ids"], batch["view_b_mask"], batch["view_b_index"])
    if objective.target_stop_grad:
        view_b = view_b.detach()
    jepa = jepa_loss(view_a, view_b, objective.loss, objective.temperature)
    return ObjectiveOutput(objective.gamma * lm + objective.lbd * jepa, lm, jepa, view_a, view_b)

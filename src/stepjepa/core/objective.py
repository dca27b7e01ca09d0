"""One packed forward pass -> LM loss, view embeddings, JEPA loss: what the trainer and the bench call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from stepjepa.core.attention import model_attention_mask
from stepjepa.core.layout import conversation_only
from stepjepa.core.losses import INFONCE_TEMPERATURE, infonce_sum_across_ranks, jepa_loss, lm_loss, world_size
from stepjepa.core.modes import Mode, check_mode
from stepjepa.core.tokenization import IGNORE_INDEX


@dataclass(frozen=True)
class Objective:
    """``loss = gamma * LM + lbd * JEPA(view_a, view_b)``; ``target_stop_grad``: no gradient through view_b."""

    mode: Mode = "step_jepa"
    loss: str = "cosine"  # cosine | l2 | mse | infonce
    lbd: float = 0.1
    gamma: float = 1.0
    temperature: float = INFONCE_TEMPERATURE
    target_stop_grad: bool = False

    def __post_init__(self) -> None:
        check_mode(self.mode)


@dataclass(frozen=True)
class LossScale:
    """The divisors that make one micro-batch's loss its share of the whole optimizer step's.

    ``lm_tokens``, ``pairs``: labelled tokens and JEPA pairs of every micro-batch of the step on every rank, so
    each token (pair) weighs the same whatever micro-batch it came in. ``world_size``: DDP averages the ranks'
    gradients, so each rank's loss is multiplied back by it.
    """

    lm_tokens: float
    pairs: float
    world_size: int = 1


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # the weighted loss to differentiate (this micro-batch's share of the step with a LossScale)
    lm_loss: torch.Tensor  # mean over this batch's labelled tokens
    jepa_loss: torch.Tensor | None  # mean over this batch's pairs; None when it has no JEPA term
    view_a: torch.Tensor | None  # (P, D) embeddings of the batch's P pairs, in row order
    view_b: torch.Tensor | None
    lm_tokens: int = 0  # labelled tokens of this batch
    pairs: int = 0  # JEPA pairs of this batch


def lm_window(labels: torch.Tensor) -> tuple[int, int]:
    """``[lo, hi)``: the positions whose next token is labelled in some row (the LM head runs there only)."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    return int(labelled[0]) - 1, int(labelled[-1])


def add_host_counts(batch: dict[str, Any]) -> dict[str, Any]:
    """The collated batch (still on the host) with the counts a step needs as Python ints, which stay on the host
    when the batch's tensors move to the device, so the step reads nothing back (each read waits for the GPU's
    queue to drain): its LM window ``lm_lo``, ``lm_hi``, labelled tokens ``lm_tokens``, examples with a JEPA pair
    ``pair_examples``, and ``conversation_rows``, ``conversation_width``, ``num_tokens``."""
    batch["lm_lo"], batch["lm_hi"] = lm_window(batch["labels"])
    batch["lm_tokens"] = int((batch["labels"] != IGNORE_INDEX).sum())  # view rows and padding carry no label
    # Examples with a JEPA pair (a packed row holds several examples: count examples, not rows).
    batch["pair_examples"] = len(set(batch["pair_example" if "pair_example" in batch else "pair_row"].tolist()))
    for key in ("conversation_rows", "conversation_width", "num_tokens"):
        if key in batch:
            batch[key] = int(batch[key])
    return batch


@dataclass
class HostCountingCollator:
    """A collator whose batches carry :func:`add_host_counts` (computed in the DataLoader's worker, if any)."""

    collator: Callable[[list], dict]

    def __call__(self, rows: list) -> dict:
        return add_host_counts(self.collator(rows))


def _attn_implementation(model: torch.nn.Module) -> str | None:
    """The attention implementation of ``model`` (wrapped by DDP, PEFT or torch.compile), None if unknown."""
    config = getattr(getattr(model, "module", model), "config", None)
    return getattr(config, "_attn_implementation", None)


def _plain_output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The output embedding, where the model's logits are exactly it applied to the last hidden state (no logit
    scaling or soft-capping in its config); None otherwise. ``model`` may be wrapped by DDP or PEFT."""
    model = getattr(model, "module", model)  # DDP
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1.0):
        return None
    return model.get_output_embeddings()


def compute_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective,
                      use_jepa: bool = True, scale: LossScale | None = None) -> ObjectiveOutput:
    """Run the packed batch once; ``use_jepa=False`` drops the view blocks and computes LM only.

    Without ``scale`` the loss is ``gamma * (token mean) + lbd * (pair mean)`` over this batch; with it, the sums
    are divided by the step's counts instead. InfoNCE with several ranks takes its negatives from every rank (a
    collective: every rank computes it whenever the JEPA term is on, with or without pairs of its own).
    """
    use_jepa = use_jepa and objective.mode != "regular"
    has_pairs = len(batch["pair_row"]) > 0
    across_ranks = use_jepa and objective.loss == "infonce" and world_size() > 1
    if not (use_jepa and has_pairs):
        batch = conversation_only(batch)
    conversations = int(batch["conversation_rows"])
    head = _plain_output_head(model) if len(batch["input_ids"]) > conversations else None
    # Host counts (HostCountingCollator) where the batch has them; else read from its tensors.
    lo, hi = (batch["lm_lo"], batch["lm_hi"]) if "lm_lo" in batch else lm_window(batch["labels"])
    inputs = {key: batch[key] for key in ("input_ids", "position_ids")}
    inputs["attention_mask"] = model_attention_mask(batch, getattr(model, "dtype", torch.float32),
                                                    _attn_implementation(model))
    embeds = use_jepa and (has_pairs or across_ranks)
    out = model(
        **inputs,
        output_hidden_states=embeds,
        use_cache=False,
        # With view rows, the head runs below on the conversation rows alone (view rows have no labels).
        logits_to_keep=1 if head is not None else torch.arange(lo, hi, device=batch["input_ids"].device),
    )
    if head is not None:
        logits = head(out.hidden_states[-1][:conversations, lo:hi])
    else:
        logits = out.logits[:conversations]
    targets = batch["labels"][:conversations, lo + 1 : hi + 1]
    lm_tokens = batch["lm_tokens"] if "lm_tokens" in batch else int((targets != IGNORE_INDEX).sum())
    lm_sum = lm_loss(logits, targets, reduction="sum")  # logits (B, hi-lo, V)
    lm = lm_sum / lm_tokens
    lm_term = lm if scale is None else lm_sum / scale.lm_tokens
    factor = 1 if scale is None else scale.world_size
    if not embeds:
        return ObjectiveOutput(factor * objective.gamma * lm_term, lm, None, None, None, lm_tokens, 0)
    hidden = out.hidden_states[-1]  # (rows, T, D)
    view_a = hidden[batch["pair_a_row"], batch["pair_view_a"]]  # (P, D); P = 0: an InfoNCE rank without pairs
    view_b = hidden[batch["pair_b_row"], batch["pair_view_b"]]
    if objective.target_stop_grad:
        view_b = view_b.detach()  # the target branch gets no gradient (I-JEPA, BYOL)
    pairs = len(view_a)
    if across_ranks:
        jepa_sum = infonce_sum_across_ranks(view_a, view_b, objective.temperature)
    else:
        jepa_sum = jepa_loss(view_a, view_b, objective.loss, objective.temperature, reduction="sum")
    jepa = jepa_sum / pairs if pairs else None
    jepa_term = (jepa if jepa is not None else jepa_sum) if scale is None else jepa_sum / max(scale.pairs, 1)
    loss = factor * (objective.gamma * lm_term + objective.lbd * jepa_term)
    return ObjectiveOutput(loss, lm, jepa, view_a if pairs else None, view_b if pairs else None, lm_tokens, pairs)

"""One packed forward pass -> LM loss, view embeddings, JEPA loss: what the trainer and the bench call."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stepjepa.layout import conversation_only
from stepjepa.losses import INFONCE_TEMPERATURE, jepa_loss, lm_loss
from stepjepa.modes import Mode, check_mode
from stepjepa.tokenization import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


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


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    lm_loss: torch.Tensor
    jepa_loss: torch.Tensor | None  # None when no JEPA term was computed
    view_a: torch.Tensor | None  # (P, D) embeddings of the batch's P pairs, in row order
    view_b: torch.Tensor | None


def lm_window(labels: torch.Tensor) -> tuple[int, int]:
    """``[lo, hi)``: the positions whose next token is labelled in some row (the LM head runs there only)."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    return int(labelled[0]) - 1, int(labelled[-1])


def compute_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor], objective: Objective,
                      use_jepa: bool = True) -> ObjectiveOutput:
    """Run the packed batch once; ``use_jepa=False`` drops the view blocks and computes LM only."""
    use_jepa = use_jepa and objective.mode != "regular" and len(batch["pair_row"]) > 0
    if not use_jepa:
        batch = conversation_only(batch)
    lo, hi = lm_window(batch["labels"])
    inputs = {key: batch[key] for key in MODEL_INPUTS}
    dtype = getattr(model, "dtype", torch.float32)
    inputs["attention_mask"] = inputs["attention_mask"].to(dtype if dtype.is_floating_point else torch.float32)
    out = model(
        **inputs,
        output_hidden_states=use_jepa,
        use_cache=False,
        logits_to_keep=torch.arange(lo, hi, device=batch["input_ids"].device),
    )
    lm = lm_loss(out.logits, batch["labels"][:, lo + 1 : hi + 1])  # logits (B, hi-lo, V)
    if not use_jepa:
        return ObjectiveOutput(objective.gamma * lm, lm, None, None, None)
    hidden = out.hidden_states[-1]  # (B, T, D)
    view_a = hidden[batch["pair_row"], batch["pair_view_a"]]  # (P, D)
    view_b = hidden[batch["pair_row"], batch["pair_view_b"]]
    if objective.target_stop_grad:
        view_b = view_b.detach()  # the target branch gets no gradient (I-JEPA, BYOL)
    jepa = jepa_loss(view_a, view_b, objective.loss, objective.temperature)
    return ObjectiveOutput(objective.gamma * lm + objective.lbd * jepa, lm, jepa, view_a, view_b)

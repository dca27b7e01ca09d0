"""Losses: next-token cross-entropy and the four JEPA losses between view embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stepjepa.tokenization import IGNORE_INDEX

JEPA_LOSSES = ("cosine", "l2", "mse", "infonce")
INFONCE_TEMPERATURE = 0.07


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled tokens; ``logits (B, T, V)`` already aligned with ``targets (B, T)``."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def jepa_loss(view_a: torch.Tensor, view_b: torch.Tensor, kind: str = "cosine",
              temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """JEPA loss between ``view_a (N, D)`` and ``view_b (N, D)``, averaged over the N pairs.

    cosine: ``1 - cos(a, b)``; l2: ``||a - b||_2``; mse: ``mean((a - b)^2)`` over pairs and dimensions;
    infonce: cross-entropy of ``cos(a_i, b_j) / temperature`` with the matching ``b_i`` as the target
    (the other rows of the batch are the negatives).
    """
    a, b = view_a.float(), view_b.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(a, b, dim=-1)).mean()
    if kind == "l2":
        return torch.linalg.vector_norm(a - b, dim=-1).mean()
    if kind == "mse":
        return F.mse_loss(a, b)
    if kind == "infonce":
        logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # (N, N)
        return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
    raise ValueError(f"unknown JEPA loss {kind!r}; expected one of {JEPA_LOSSES}")

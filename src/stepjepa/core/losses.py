"""Losses: next-token cross-entropy and the four JEPA losses between view embeddings.

Every loss can return its sum (``reduction="sum"``) instead of its mean, so that the trainer can divide by the
labelled tokens (or JEPA pairs) of a whole optimizer step: gradient accumulation and data-parallel ranks then
weigh every token (pair) equally, whatever micro-batch it came in.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from stepjepa.core.errors import UsageError
from stepjepa.core.tokenization import IGNORE_INDEX

JEPA_LOSSES = ("cosine", "l2", "mse", "infonce")
INFONCE_TEMPERATURE = 0.07
REDUCTIONS = ("mean", "sum")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over labelled tokens (mean or sum); ``logits (B, T, V)`` already aligned with ``targets (B, T)``."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def jepa_pair_losses(view_a: torch.Tensor, view_b: torch.Tensor, kind: str = "cosine",
                     temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """``(N,)`` per-pair JEPA losses between ``view_a (N, D)`` and ``view_b (N, D)``.

    cosine: ``1 - cos(a, b)``; l2: ``||a - b||_2``; mse: ``mean((a - b)^2)`` over the dimensions;
    infonce: cross-entropy of ``cos(a_i, b_j) / temperature`` with the matching ``b_i`` as the target
    (the other rows are the negatives).
    """
    a, b = view_a.float(), view_b.float()
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)
    if kind == "l2":
        return torch.linalg.vector_norm(a - b, dim=-1)
    if kind == "mse":
        return (a - b).square().mean(dim=-1)
    if kind == "infonce":
        logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature  # (N, N)
        return F.cross_entropy(logits, torch.arange(len(a), device=a.device), reduction="none")
    raise UsageError(f"unknown JEPA loss {kind!r}; expected one of {JEPA_LOSSES}")


def jepa_loss(view_a: torch.Tensor, view_b: torch.Tensor, kind: str = "cosine",
              temperature: float = INFONCE_TEMPERATURE, reduction: str = "mean") -> torch.Tensor:
    """The JEPA loss of :func:`jepa_pair_losses`, averaged (or summed) over the N pairs.

    mse's mean over pairs of per-pair means is the mean over pairs and dimensions (every pair has D of them).
    """
    if reduction not in REDUCTIONS:
        raise UsageError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    losses = jepa_pair_losses(view_a, view_b, kind, temperature)
    return losses.mean() if reduction == "mean" else losses.sum()


def world_size() -> int:
    """Processes of the initialised default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_rows(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``(sum(counts), D)``: every rank's rows in rank order; other ranks' are detached copies, ours is ``local``."""
    padded = local.new_zeros((max(counts), local.shape[-1]))
    padded[: len(local)] = local.detach()
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)  # all_gather needs one shape on every rank: rows padded to the largest count
    gathered[dist.get_rank()] = local
    return torch.cat([rows[:count] for rows, count in zip(gathered, counts)])


def infonce_sum_across_ranks(view_a: torch.Tensor, view_b: torch.Tensor,
                             temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """InfoNCE summed over this rank's pairs, with every rank's view_b as negatives; ``view_a, view_b (N, D)``.

    Every rank computes the loss of all ranks' pairs, with gradient through its own embeddings only (the others
    are gathered detached). Each embedding has exactly one owner, so the gradients summed over ranks are those of
    the single-process loss over the whole batch. The value returned is this rank's share (its own pairs' sum),
    so that the values summed over ranks are that loss too; the gradient is the whole sum's.
    A collective: every rank must call it, with N = 0 where it has no pair.
    """
    sizes = torch.tensor([len(view_a)], device=view_a.device)
    all_sizes = [torch.empty_like(sizes) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes)
    counts = [int(size) for size in all_sizes]
    if not sum(counts):  # every rank sees the same counts: all return here together
        return view_a.float().sum() * 0.0
    losses = jepa_pair_losses(_gather_rows(view_a, counts), _gather_rows(view_b, counts), "infonce", temperature)
    whole = losses.sum()
    start = sum(counts[: dist.get_rank()])
    share = losses[start : start + len(view_a)].sum()
    return whole + (share - whole).detach()  # value: this rank's share; gradient: the whole sum's

"""Collapse diagnostics of the JEPA view embeddings, from the embeddings the objective already computed.

A batch gives :func:`collapse_sums`, a flat vector of sums that adds over micro-batches, steps and ranks; a log
window's sums give :func:`collapse_statistics`:

- ``view_b_mean_cosine``: the mean cosine over all pairs i != j of the window's view_b embeddings (anisotropy:
  1 when every target is the same direction, about 0 for directions spread evenly);
- ``view_a_dim_std``, ``view_b_dim_std``: the standard deviation (population) of each dimension of the
  L2-normalised embeddings over the window, averaged over dimensions (0 when collapsed; about 1/sqrt(D) for
  directions spread evenly over D dimensions, as SimSiam's collapse check reads it);
- ``cosine_gap``: the mean matched cosine cos(a_i, b_i) minus the mean mismatched cosine cos(a_i, b_j), i != j,
  the mismatched pairs taken within each batch (the negatives InfoNCE would see).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COLLAPSE_KEYS = ("view_b_mean_cosine", "view_a_dim_std", "view_b_dim_std", "cosine_gap")
_SCALARS = 4  # pairs, matched cosine sum, mismatched cosine sum, mismatched pairs


def collapse_sums(view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
    """``(4 + 4 D,)`` float32 sums of one batch's ``view_a, view_b (N, D)``: pairs N, the sum of matched cosines,
    the sum of the batch's mismatched cosines and their count N (N - 1), then the L2-normalised embeddings' sums
    and sums of squares per dimension (a, b, a squared, b squared). Sums of batches add.

    Element-wise products and sums only (no matmul), so that an autocast region leaves them in float32."""
    a = F.normalize(view_a.detach().float(), dim=-1)  # (N, D)
    b = F.normalize(view_b.detach().float(), dim=-1)
    n = len(a)
    sum_a, sum_b = a.sum(0), b.sum(0)  # (D,)
    matched = (a * b).sum()
    # sum over all i, j of a_i . b_j is (sum a) . (sum b); less the matched terms, the N (N - 1) mismatched ones.
    mismatched = (sum_a * sum_b).sum() - matched
    scalars = torch.stack([matched.new_tensor(float(n)), matched, mismatched, matched.new_tensor(float(n * (n - 1)))])
    return torch.cat([scalars, sum_a, sum_b, a.square().sum(0), b.square().sum(0)])


def collapse_sums_width(dim: int) -> int:
    """The length of :func:`collapse_sums` for embeddings of ``dim`` dimensions (a rank without pairs sends zeros)."""
    return _SCALARS + 4 * dim


def collapse_statistics(sums: torch.Tensor) -> dict[str, float | None]:
    """The four statistics of :data:`COLLAPSE_KEYS` from summed :func:`collapse_sums`; a statistic needing two
    pairs (or, for the gap, a batch of two) is None without them."""
    sums = sums.detach().double().cpu()
    n, matched, mismatched, mismatched_pairs = sums[:_SCALARS].tolist()
    sum_a, sum_b, square_a, square_b = sums[_SCALARS:].reshape(4, -1)  # each (D,)
    if n < 2:
        return {key: None for key in COLLAPSE_KEYS}

    def dim_std(total: torch.Tensor, squares: torch.Tensor) -> float:
        variance = (squares / n - (total / n).square()).clamp(min=0.0)
        return float(variance.sqrt().mean())

    # sum over i != j of b_i . b_j = |sum b|^2 - sum |b_i|^2 (the squares' total; a zero embedding counts 0).
    view_b_mean_cosine = float((sum_b.square().sum() - square_b.sum()) / (n * (n - 1)))
    gap = matched / n - mismatched / mismatched_pairs if mismatched_pairs else None
    return {"view_b_mean_cosine": view_b_mean_cosine, "view_a_dim_std": dim_std(sum_a, square_a),
            "view_b_dim_std": dim_std(sum_b, square_b), "cosine_gap": gap}

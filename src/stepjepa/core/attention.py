"""The model's attention mask for a packed batch, per attention implementation.

``sdpa`` and ``eager`` take the collator's dense ``(B, 1, T, T)`` additive mask (0 allowed, -inf not); a boolean
4D mask is wrong under ``eager``. ``flex_attention`` takes a FlexAttention ``BlockMask`` built here, on the
batch's device, from the ``(B, T)`` ``block_start``, ``context_end`` and ``doc_start`` columns: no T x T tensor crosses from the
host, and blocks that nothing may attend to are skipped. transformers returns a 4D mask (a BlockMask is one) as
it is, and RoPE takes its positions from ``position_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stepjepa.core.errors import UsageError
from stepjepa.core.layout import additive_mask, allowed_attention, may_attend

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")
ATTN_CHOICES = ("auto",) + ATTN_IMPLEMENTATIONS  # what --attn_implementation accepts
# torch's inductor, which compiles FlexAttention on CUDA, refuses query/key/value widths below 16.
FLEX_MIN_HEAD_DIM = 16
# FlexAttention's block size: batch widths padded to a multiple of it reuse compiled kernels and whole blocks.
FLEX_BLOCK_SIZE = 128


@dataclass(frozen=True)
class AttentionChoice:
    """The implementation a run uses and why (the start line prints both)."""

    implementation: str
    reason: str


def choose_attention(requested: str, cuda_available: bool, supports_flex: bool, head_dim: int | None,
                     model_class: str = "the model") -> AttentionChoice:
    """``auto``: flex_attention on CUDA when the model class supports it and its head dimension is at least
    :data:`FLEX_MIN_HEAD_DIM`, sdpa otherwise. An explicit ``flex_attention`` the run cannot use raises one line."""
    if requested not in ATTN_CHOICES:
        raise UsageError(f"--attn_implementation must be one of {', '.join(ATTN_CHOICES)}, got {requested!r}")
    obstacle = None
    if not cuda_available:
        obstacle = "no CUDA GPU"
    elif not supports_flex:
        obstacle = f"{model_class} has no FlexAttention support in transformers"
    elif head_dim is None or head_dim < FLEX_MIN_HEAD_DIM:
        obstacle = f"{model_class}'s head dimension {head_dim} is below {FLEX_MIN_HEAD_DIM}, which FlexAttention's " \
                   "compiled kernels need"
    if requested == "flex_attention":
        if not cuda_available:
            raise UsageError("--attn_implementation flex_attention needs a CUDA GPU (FlexAttention has no backward "
                             "on the CPU); use sdpa or auto")
        if obstacle:
            raise UsageError(f"--attn_implementation flex_attention cannot run here: {obstacle}; use sdpa or auto")
        return AttentionChoice("flex_attention", "asked for")
    if requested != "auto":
        return AttentionChoice(requested, "asked for")
    if obstacle:
        return AttentionChoice("sdpa", f"auto: {obstacle}")
    return AttentionChoice("flex_attention", f"auto: CUDA, {model_class} supports FlexAttention, head dimension "
                                             f"{head_dim} >= {FLEX_MIN_HEAD_DIM}")


def host_builds_dense_mask(implementation: str, cuda: bool) -> bool:
    """Whether the collator builds the ``(B, 1, T, T)`` mask on the host: only for sdpa/eager off CUDA. On CUDA
    the step builds it on the device from the ``(B, T)`` columns (:func:`model_attention_mask`)."""
    return uses_dense_mask(implementation) and not cuda


def batch_width_multiple(implementation: str, cuda: bool, compiled: bool = False) -> int | None:
    """The multiple a batch's width is padded to: :data:`FLEX_BLOCK_SIZE` on CUDA with compiled kernels
    (flex_attention, ``--compile``), so a few widths recur and their kernels are reused; else None (no padding)."""
    return FLEX_BLOCK_SIZE if cuda and (implementation == "flex_attention" or compiled) else None


def uses_dense_mask(attn_implementation: str) -> bool:
    """Whether the collator must build the dense additive mask (sdpa, eager) or not (flex_attention)."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise UsageError(f"unknown attention implementation {attn_implementation!r}; "
                         f"expected one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    return attn_implementation != "flex_attention"


def flex_block_mask(block_start: torch.Tensor, context_end: torch.Tensor, doc_start: torch.Tensor | None = None):
    """The packed rule as a FlexAttention ``BlockMask`` of shape ``(B, 1, T, T)``, from ``(B, T)`` columns
    (``doc_start`` None: 0, one example per row)."""
    from torch.nn.attention.flex_attention import create_block_mask

    rows, length = block_start.shape
    lower = torch.zeros_like(block_start) if doc_start is None else doc_start

    def mask_mod(b, h, query, key):
        return may_attend(query, key, block_start[b, query], context_end[b, query], lower[b, query])

    return create_block_mask(mask_mod, rows, None, length, length, device=block_start.device)


def model_attention_mask(batch: dict[str, torch.Tensor], dtype: torch.dtype, implementation: str | None = None):
    """The batch's dense mask cast to the model's floating dtype; without one, its ``BlockMask`` (flex_attention,
    or ``implementation`` None) or the dense mask built where the batch lies (sdpa, eager on CUDA)."""
    dtype = dtype if dtype.is_floating_point else torch.float32
    if "attention_mask" in batch:
        return batch["attention_mask"].to(dtype)
    if implementation in (None, "flex_attention"):
        return flex_block_mask(batch["block_start"], batch["context_end"], batch.get("doc_start"))
    return additive_mask(allowed_attention(batch["block_start"], batch["context_end"], batch.get("doc_start")), dtype)

"""The model's attention mask for a packed batch, per attention implementation.

``sdpa`` and ``eager`` take the collator's dense ``(B, 1, T, T)`` additive mask (0 allowed, -inf not); a boolean
4D mask is wrong under ``eager``. ``flex_attention`` takes a FlexAttention ``BlockMask`` built here, on the
batch's device, from the ``(B, T)`` ``block_start``, ``context_end`` and ``doc_start`` columns: no T x T tensor crosses from the
host, and blocks that nothing may attend to are skipped. transformers returns a 4D mask (a BlockMask is one) as
it is, and RoPE takes its positions from ``position_ids``.
"""

from __future__ import annotations

import torch

from stepjepa.core.layout import may_attend
from stepjepa.errors import UsageError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")


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


def model_attention_mask(batch: dict[str, torch.Tensor], dtype: torch.dtype):
    """The batch's dense mask cast to the model's floating dtype, or, without one, its ``BlockMask``."""
    if "attention_mask" in batch:
        return batch["attention_mask"].to(dtype if dtype.is_floating_point else torch.float32)
    return flex_block_mask(batch["block_start"], batch["context_end"], batch.get("doc_start"))

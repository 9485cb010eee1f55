"""Loss aggregation: how per-token (or per-sequence) losses become one scalar.

``L`` is a ``(B, T)`` per-token loss, ``m`` the ``(B, T)`` 0/1 mask, ``|y_i| = sum_t m_it``.
Rows with no masked token are not sequences (they are padding or filtered out): they never
count in a mean over sequences.

==========================  ============================================================
``token_mean``              sum_it m L / sum_it m                       (DAPO eq. 12)
``seq_mean_token_mean``     mean_i [ sum_t m L / |y_i| ]                 (GRPO eq. 3)
``seq_mean``                token level: mean_i sum_t m L (token sum per sequence);
                            sequence level (GSPO): mean_i of the sequence losses
``constant``                sum_it m L / (B * max_tokens)               (Dr. GRPO)
==========================  ============================================================

A *sequence-level* loss (GSPO) is passed as the per-token broadcast of the sequence values; its
sequence value is the masked token mean, so ``token_mean``, ``seq_mean_token_mean`` and
``constant`` agree with the broadcast, and ``seq_mean`` is the plain mean over sequences.
"""

from __future__ import annotations

from typing import Literal

import torch

Agg = Literal["token_mean", "seq_mean_token_mean", "seq_mean", "constant"]
AGGREGATIONS: tuple[str, ...] = ("token_mean", "seq_mean_token_mean", "seq_mean", "constant")


def aggregate(
    loss: torch.Tensor,
    mask: torch.Tensor,
    agg: str,
    *,
    max_tokens: int | None = None,
    sequence_level: bool = False,
) -> torch.Tensor:
    """Reduce a masked ``(B, T)`` loss to a scalar. ``loss`` must already be 0 where masked."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg: unknown aggregation {agg!r}; valid: {', '.join(AGGREGATIONS)}")
    m = mask.to(loss.dtype)  # (B, T)
    lengths = m.sum(-1)  # (B,)
    is_seq = lengths > 0  # (B,)
    n_seq = is_seq.sum().clamp(min=1)
    if agg == "token_mean":
        return (loss * m).sum() / lengths.sum().clamp(min=1)
    if agg == "constant":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError(
                "max_tokens: the 'constant' aggregation (Dr. GRPO) needs max_tokens > 0"
            )
        return (loss * m).sum() / (loss.shape[0] * max_tokens)
    per_seq = (loss * m).sum(-1)  # (B,) token sums
    if agg == "seq_mean_token_mean" or sequence_level:
        per_seq = per_seq / lengths.clamp(min=1)  # (B,) token means = sequence values
    return torch.where(is_seq, per_seq, torch.zeros_like(per_seq)).sum() / n_seq


def normaliser_share(mask: torch.Tensor, total_mask: torch.Tensor, agg: str) -> float:
    """The share of a micro-batch in the batch's normaliser (for gradient accumulation).

    Summing ``share * aggregate(micro-batch)`` over micro-batches gives ``aggregate(batch)``
    exactly: tokens for ``token_mean``, sequences (rows with tokens) for the sequence means, and
    rows for ``constant``.
    """
    if agg == "token_mean":
        return float(mask.sum() / total_mask.sum().clamp(min=1))
    if agg == "constant":
        return mask.shape[0] / total_mask.shape[0]
    seqs = (mask.sum(-1) > 0).sum()
    return float(seqs / (total_mask.sum(-1) > 0).sum().clamp(min=1))

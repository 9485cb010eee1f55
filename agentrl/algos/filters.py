"""Batch filters: DAPO dynamic sampling and overlong handling, GFPO group filtering.

* ``dynamic_sampling`` (DAPO, arXiv 2503.14476 eq. 11): a group whose rewards are all equal has
  zero advantage everywhere and teaches nothing; drop it and report how many were dropped so
  the trainer can refill the batch.
* ``overlong_penalty`` (DAPO eq. 13, soft overlong punishment) as a reward component, and
  ``mask_truncated`` (overlong filtering: truncated responses leave the loss).
* ``gfpo_keep`` / ``gfpo_advantages`` (GFPO, arXiv 2508.09726): sample a larger group, keep the
  k best by length or by reward per token, compute advantages within the kept set, 0 elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch

from agentrl.algos.advantages import _group_index, group_advantages, group_stats
from agentrl.registry import Registry
from agentrl.types import TrajectoryGroup

FILTERS: Registry = Registry("batch filter")
GFPO_METRICS = ("length", "token_efficiency")


def dynamic_sampling_mask(
    rewards: torch.Tensor, lengths: torch.Tensor | None, group_ids: Any, tol: float = 0.0
) -> torch.Tensor:
    """``(N,)`` bool: True for samples whose group has reward spread (max - min > tol).

    ``lengths`` is unused; it keeps the one signature of the ``FILTERS`` registry.
    """
    rewards = torch.as_tensor(rewards).double()
    index = _group_index(group_ids, rewards.shape[0])
    g = int(index.max()) + 1 if index.numel() else 0
    hi = torch.full((g,), -torch.inf, dtype=torch.float64).scatter_reduce(0, index, rewards, "amax")
    lo = torch.full((g,), torch.inf, dtype=torch.float64).scatter_reduce(0, index, rewards, "amin")
    return (hi - lo > tol)[index]


def dynamic_sampling(
    groups: list[TrajectoryGroup], tol: float = 0.0
) -> tuple[list[TrajectoryGroup], int]:
    """Keep the groups whose trajectories' rewards differ; return them and how many were dropped."""
    kept = [g for g in groups if len(g) > 1 and max(g.rewards) - min(g.rewards) > tol]
    return kept, len(groups) - len(kept)


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache: int) -> torch.Tensor:
    """DAPO's soft overlong punishment ``(N,)`` (arXiv 2503.14476, eq. 13), a reward component.

    ``0`` if ``L <= L_max - L_cache``; ``((L_max - L_cache) - L) / L_cache`` inside the cache
    window; ``-1`` beyond ``L_max``.
    """
    if cache <= 0 or cache > max_length:
        raise ValueError(f"cache: must be in 1..max_length={max_length}, got {cache}")
    n = torch.as_tensor(lengths).double()  # (N,) |y|
    soft = max_length - cache  # L_max - L_cache
    window = (soft - n) / cache  # (N,) inside the cache window
    inside = torch.where(n <= max_length, window, -torch.ones_like(n))  # (N,)
    return torch.where(n <= soft, torch.zeros_like(n), inside)  # (N,)


def mask_truncated(mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """DAPO overlong filtering: zero the loss mask ``(B, T)`` of truncated rows ``(B,)``."""
    if truncated.shape != mask.shape[:1]:
        raise ValueError(f"truncated: shape {tuple(truncated.shape)} != ({mask.shape[0]},)")
    return mask * (~truncated.bool()).unsqueeze(-1).to(mask.dtype)


def _check_k(k: int | torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    kk = torch.as_tensor(k, dtype=torch.long)
    kk = kk.expand_as(sizes) if kk.dim() == 0 else kk
    if kk.shape != sizes.shape:
        raise ValueError(
            f"k: a per-sample tensor must have shape {tuple(sizes.shape)}, got {tuple(kk.shape)}"
        )
    if (kk < 1).any():
        raise ValueError(f"k: must be >= 1, got {int(kk.min())}")
    if (kk > sizes).any():
        bad = int((kk - sizes).argmax())
        raise ValueError(f"k: {int(kk[bad])} > group size G={int(sizes[bad])}; k must be <= G")
    return kk


def gfpo_keep(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group_ids: Any,
    k: int | torch.Tensor,
    metric: str = "length",
) -> torch.Tensor:
    """``(N,)`` bool: the k best samples of each group (GFPO, arXiv 2508.09726).

    ``metric="length"`` keeps the k shortest; ``"token_efficiency"`` the k highest
    ``reward / length``. Ties go to the lower index (deterministic). ``k`` may be an int or an
    ``(N,)`` tensor giving each sample's group k (adaptive GFPO, see :func:`adaptive_k`).
    """
    if metric not in GFPO_METRICS:
        raise ValueError(f"metric: must be one of {', '.join(GFPO_METRICS)}, got {metric!r}")
    rewards = torch.as_tensor(rewards).double()
    lengths = torch.as_tensor(lengths).double()
    n = rewards.shape[0]
    if lengths.shape != (n,):
        raise ValueError(f"lengths: shape {tuple(lengths.shape)} != rewards shape ({n},)")
    if metric == "token_efficiency" and (lengths <= 0).any():
        raise ValueError("lengths: must be > 0 for metric='token_efficiency'")
    index = _group_index(group_ids, n)
    _, _, sizes = group_stats(rewards, index)
    kk = _check_k(k, sizes.long())
    score = lengths if metric == "length" else -(rewards / lengths)  # lower is better
    # rank within group: samples of the same group that are better, or equal with lower index
    same = index.unsqueeze(0) == index.unsqueeze(1)  # (N, N)
    pos = torch.arange(n)
    better = (score.unsqueeze(0) < score.unsqueeze(1)) | (
        (score.unsqueeze(0) == score.unsqueeze(1)) & (pos.unsqueeze(0) < pos.unsqueeze(1))
    )  # better[i, j]: j beats i
    rank = (same & better).sum(1)  # (N,)
    return rank < kk


def gfpo_advantages(
    rewards: torch.Tensor,
    lengths: torch.Tensor,
    group_ids: Any,
    k: int | torch.Tensor,
    metric: str = "length",
    scale: str = "std",
    eps: float = 1e-6,
) -> torch.Tensor:
    """GFPO advantages ``(N,)``: ``(R_i - mean_S) / (std_S + eps)`` over the kept set ``S`` of each
    group, exactly 0 for the rest (arXiv 2508.09726)."""
    keep = gfpo_keep(rewards, lengths, group_ids, k, metric)
    rewards = torch.as_tensor(rewards).double()
    index = _group_index(group_ids, rewards.shape[0])
    out = torch.zeros_like(rewards)
    out[keep] = group_advantages(rewards[keep], index[keep], scale=scale, eps=eps)
    return out


def adaptive_k(
    rewards: torch.Tensor, group_ids: Any, k_levels: tuple[int, ...] = (4, 6, 8)
) -> torch.Tensor:
    """Adaptive-difficulty GFPO: per-sample k from its group's mean reward (easy -> small k).

    Groups are ranked by mean reward and split into ``len(k_levels)`` equal buckets; the
    hardest bucket (lowest mean reward) gets ``k_levels[-1]``, the easiest ``k_levels[0]``.
    """
    rewards = torch.as_tensor(rewards).double()
    index = _group_index(group_ids, rewards.shape[0])
    g = int(index.max()) + 1
    count = torch.zeros(g, dtype=torch.float64).index_add_(0, index, torch.ones_like(rewards))
    group_mean = torch.zeros(g, dtype=torch.float64).index_add_(0, index, rewards) / count  # (G,)
    order = torch.argsort(-group_mean, stable=True)  # easiest first
    bucket = torch.empty(g, dtype=torch.long)
    bucket[order] = torch.arange(g) * len(k_levels) // max(g, 1)
    return torch.tensor(k_levels, dtype=torch.long)[bucket][index]


# One signature: (rewards (N,), lengths (N,), group_ids (N,), **options) -> keep mask (N,) bool
FILTERS.register("dynamic_sampling", dynamic_sampling_mask)
FILTERS.register("gfpo", gfpo_keep)

"""Advantage estimators: group-relative, per reward component, and turn-level for trees.

All functions are pure and vectorised; ``group_ids`` is an integer tensor ``(N,)`` (any ids,
not necessarily contiguous) or a list of hashables. Advantages are returned as constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agentrl.registry import Registry

SCALES = ("std", "none")
MODES = ("sum_then_normalize", "normalize_then_sum")


def _group_index(group_ids: Any, n: int) -> torch.Tensor:
    """Dense ``0..G-1`` index per sample from arbitrary group ids."""
    if not isinstance(group_ids, torch.Tensor):
        ids = list(group_ids)
        lookup: dict[Any, int] = {}
        group_ids = torch.tensor([lookup.setdefault(g, len(lookup)) for g in ids], dtype=torch.long)
    if group_ids.shape != (n,):
        raise ValueError(f"group_ids: shape {tuple(group_ids.shape)} != rewards shape ({n},)")
    return torch.unique(group_ids, return_inverse=True)[1]


def group_stats(x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group mean, unbiased group std (0 for singleton groups) and group size."""
    g = int(index.max()) + 1 if index.numel() else 0
    count = torch.zeros(g, dtype=x.dtype).index_add_(0, index, torch.ones_like(x))  # (G,)
    mean = torch.zeros(g, dtype=x.dtype).index_add_(0, index, x) / count  # (G,)
    dev2 = (x - mean[index]) ** 2  # (N,)
    ssd = torch.zeros(g, dtype=x.dtype).index_add_(0, index, dev2)  # (G,)
    var = torch.where(count > 1, ssd / (count - 1).clamp(min=1), torch.zeros_like(ssd))  # (G,)
    return mean[index], var.sqrt()[index], count[index]


def group_advantages(
    rewards: torch.Tensor, group_ids: Any, scale: str = "std", eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages ``(N,)`` (GRPO, arXiv 2402.03300 sec. 4.1.2).

    ``scale="std"``: ``(r - mean_g) / (std_g + eps)`` with the unbiased group std;
    ``scale="none"``: ``r - mean_g`` (Dr. GRPO, arXiv 2503.20783). A singleton group has std 0
    (its advantage is 0 either way).
    """
    if scale not in SCALES:
        raise ValueError(f"scale: must be one of {', '.join(SCALES)}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"eps: must be >= 0, got {eps}")
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards: expected shape (N,), got {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.double()
    index = _group_index(group_ids, rewards.shape[0])
    mean, std, _ = group_stats(rewards.detach(), index)
    centred = rewards.detach() - mean
    if scale == "none":
        return centred
    denom = std + eps  # 0 only for a constant group with eps=0, where centred is 0 too
    return centred / torch.where(denom > 0, denom, torch.ones_like(denom))


def vector_advantages(
    components: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_ids: Any,
    mode: str = "sum_then_normalize",
    scale: str = "std",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Advantages from a vector of named reward components ``(N,)`` each.

    ``sum_then_normalize``: ``group_advantages(sum_k w_k c_k)`` (the scalar-reward baseline).
    ``normalize_then_sum``: ``sum_k w_k group_advantages(c_k)``: every component is normalised
    in its group first, so a component with a large raw scale cannot drown the others and the
    policy sees which behaviour was rewarded. Components without a weight (or weight 0) are
    metrics only.
    """
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
    if not components:
        raise ValueError("components: at least one reward component is needed")
    unknown = sorted(set(weights) - set(components))
    if unknown:
        raise ValueError(f"weights: no component named {unknown}; components: {sorted(components)}")
    tensors = {k: torch.as_tensor(v).double() for k, v in components.items()}
    n = next(iter(tensors.values())).shape[0]
    for k, v in tensors.items():
        if v.shape != (n,):
            raise ValueError(f"components[{k!r}]: shape {tuple(v.shape)} != ({n},)")
    active = [k for k in tensors if weights.get(k, 0.0) != 0.0]
    if mode == "sum_then_normalize":
        total = torch.zeros(n, dtype=torch.float64)
        for k in active:
            total = total + weights[k] * tensors[k]
        return group_advantages(total, group_ids, scale=scale, eps=eps)
    out = torch.zeros(n, dtype=torch.float64)
    for k in active:
        out = out + weights[k] * group_advantages(tensors[k], group_ids, scale=scale, eps=eps)
    return out


def component_stats(
    components: dict[str, torch.Tensor], weights: dict[str, float], group_ids: Any, scale: str = "std"
) -> dict[str, float]:
    """Per-component reward mean/std and advantage share (mean |w_k A_k| over all components)."""
    out: dict[str, float] = {}
    loud: dict[str, float] = {}
    for k, v in components.items():
        v = torch.as_tensor(v).double()
        out[f"reward/{k}_mean"] = float(v.mean())
        out[f"reward/{k}_std"] = float(v.std()) if v.numel() > 1 else 0.0
        w = weights.get(k, 0.0)
        loud[k] = float((w * group_advantages(v, group_ids, scale=scale)).abs().mean()) if w else 0.0
    total = sum(loud.values())
    for k, v in loud.items():
        out[f"adv_share/{k}"] = v / total if total > 0 else 0.0
    return out


@dataclass
class TurnNode:
    """A branching node of a rollout tree (see ``agentrl.rollout.turn_groups``).

    Attributes:
        members: trajectory indices (rows) of the leaves below the node.
        children: for each member, which child of the node it descends from.
        rewards: for each member, its episode reward.
        start: first loss slot (``(B, T)`` column) that belongs to the children: tokens before
            it are the shared prefix and get no turn-level advantage from this node.
    """

    members: Sequence[int]
    children: Sequence[int]
    rewards: Sequence[float]
    start: int


def turn_advantages(
    episode_adv: torch.Tensor,
    num_slots: int,
    nodes: Sequence[TurnNode],
    weight: float = 1.0,
    scale: str = "std",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Turn-level credit for tree rollouts, composed additively with the episode level.

    At each node the siblings form the group: a child's value is the mean reward of the
    leaves below it; children get group-relative advantages among themselves. A trajectory's
    slots from ``node.start`` on receive ``weight * A_child``; before it (the shared prefix)
    they receive nothing from that node. The result is ``episode_adv[:, None] + sum_nodes``,
    ``(N, num_slots)``: tokens after a good decision are reinforced beyond the episode outcome.
    """
    out = episode_adv.detach().double().unsqueeze(-1).repeat(1, num_slots)  # (N, T)
    for node in nodes:
        children = torch.as_tensor(list(node.children))
        rewards = torch.as_tensor(list(node.rewards), dtype=torch.float64)
        uniq, inv = torch.unique(children, return_inverse=True)
        value = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, rewards)
        value = value / torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv, torch.ones_like(rewards))
        child_adv = group_advantages(value, torch.zeros(len(uniq), dtype=torch.long), scale=scale, eps=eps)
        for row, c in zip(node.members, inv.tolist()):
            out[row, node.start :] += weight * child_adv[c]
    return out


ADVANTAGES: Registry = Registry("advantage estimator")
ADVANTAGES.register("grpo", lambda r, g, eps=1e-6: group_advantages(r, g, "std", eps))
ADVANTAGES.register("dr_grpo", lambda r, g, eps=1e-6: group_advantages(r, g, "none", eps))

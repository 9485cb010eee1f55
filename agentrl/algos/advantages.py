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
from agentrl.types import TrajectoryGroup

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


def group_stats(
    x: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    components: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_ids: Any,
    scale: str = "std",
) -> dict[str, float]:
    """Per-component reward mean/std and advantage share (mean |w_k A_k| over all components)."""
    out: dict[str, float] = {}
    loud: dict[str, float] = {}
    for k, v in components.items():
        v = torch.as_tensor(v).double()
        out[f"reward/{k}_mean"] = float(v.mean())
        out[f"reward/{k}_std"] = float(v.std()) if v.numel() > 1 else 0.0
        w = weights.get(k, 0.0)
        loud[k] = (
            float((w * group_advantages(v, group_ids, scale=scale)).abs().mean()) if w else 0.0
        )
    total = sum(loud.values())
    for k, v in loud.items():
        out[f"adv_share/{k}"] = v / total if total > 0 else 0.0
    return out


@dataclass
class TurnNode:
    """A branching node of a rollout tree, in ``(N, T)`` batch coordinates.

    Attributes:
        members: trajectory indices (rows) of the leaves below the node.
        children: for each member, which child of the node it descends from.
        rewards: for each member, its episode reward.
        start: first ``(N, T)`` column that belongs to the children: columns before it are
            the shared prefix and get no turn-level advantage from this node.
    """

    members: Sequence[int]
    children: Sequence[int]
    rewards: Sequence[float]
    start: int

    @classmethod
    def from_group(cls, group: TrajectoryGroup, rows: Sequence[int], offset: int = 0) -> TurnNode:
        """From a ``level="turn"`` group of ``agentrl.rollout.turn_groups``.

        Args:
            group: the siblings below one node; ``metadata["child"]`` names each one's child
                and ``prefix_length`` is the token position where the children start.
            rows: the batch row of each trajectory of the group, in order.
            offset: token position of batch column 0 (e.g. the prompt length when the batch
                holds completions only); ``start = prefix_length - offset``.
        """
        if group.level != "turn":
            raise ValueError(f"group: level must be 'turn', got {group.level!r}")
        if len(rows) != len(group):
            raise ValueError(f"rows: {len(rows)} rows for a group of {len(group)} trajectories")
        children = group.metadata.get("child", list(range(len(group))))
        return cls(
            list(rows),
            list(children),
            [t.reward for t in group.trajectories],
            group.prefix_length - offset,
        )


TURN_MODES = ("add", "replace")


def turn_advantages(
    episode_adv: torch.Tensor,
    num_slots: int,
    nodes: Sequence[TurnNode],
    weight: float = 1.0,
    scale: str = "std",
    eps: float = 1e-6,
    mode: str = "add",
) -> torch.Tensor:
    """Turn-level credit for tree rollouts: ``(N, num_slots)`` per-token advantages.

    At each node the siblings form the group: a child's value is the mean reward of the
    leaves below it, and the children get group-relative advantages ``A_child`` among
    themselves (``group_advantages`` with ``scale``/``eps``). A trajectory's columns from
    ``node.start`` on receive that node's ``weight * A_child``; the shared prefix before it
    gets nothing from that node.

    ``mode="add"`` (default): ``A_it = A_i + sum over nodes above i with start <= t of
    weight * A_child``; tokens after a good decision are reinforced beyond the episode
    outcome. ``mode="replace"``: after a node, the deepest node's ``weight * A_child``
    replaces the episode-level advantage (nodes apply in order of ``start``).
    """
    if mode not in TURN_MODES:
        raise ValueError(f"mode: must be one of {', '.join(TURN_MODES)}, got {mode!r}")
    out = episode_adv.detach().double().unsqueeze(-1).repeat(1, num_slots)  # (N, T)
    for node in sorted(nodes, key=lambda nd: nd.start):
        if not 0 <= node.start <= num_slots:
            raise ValueError(f"start: {node.start} outside 0..num_slots={num_slots}")
        rewards = torch.as_tensor(list(node.rewards), dtype=torch.float64)  # (n,)
        child = torch.unique(torch.as_tensor(list(node.children)), return_inverse=True)[1]  # (n,)
        mean, _, _ = group_stats(rewards, child)  # (n,) each member's child value
        value = torch.zeros(int(child.max()) + 1, dtype=torch.float64).index_put_((child,), mean)
        child_adv = group_advantages(value, torch.zeros(len(value), dtype=torch.long), scale, eps)
        for row, c in zip(node.members, child.tolist(), strict=True):
            if mode == "add":
                out[row, node.start :] += weight * child_adv[c]
            else:
                out[row, node.start :] = weight * child_adv[c]
    return out


# One signature: (rewards (N,), group_ids (N,), eps) -> advantages (N,)
ADVANTAGES: Registry = Registry("advantage estimator")


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: Any, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (arXiv 2402.03300, sec. 4.1.2): ``(r - mean_g) / (std_g + eps)``."""
    return group_advantages(rewards, group_ids, "std", eps)


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor, group_ids: Any, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO (arXiv 2503.20783, sec. 3.1): ``r - mean_g``, no std scaling."""
    return group_advantages(rewards, group_ids, "none", eps)

"""Turn trajectory groups into per-trajectory advantages with the registered pure functions.

Order of operations (each an explicit, documented choice):
  1. failed trajectories are left out of every group statistic and get no loss;
  2. GFPO (``filters.gfpo_k``) keeps the k best of each group by length or reward per token;
  3. per-component advantages (``vector_advantages``) are computed within the kept set;
     the rest get advantage 0 and no loss;
  4. DAPO overlong filtering (``filters.mask_truncated``) removes truncated episodes from the
     loss (they still count in their group's statistics);
  5. tree rollouts: the siblings at each branching node form a turn-level group and the tokens
     after the node get ``algo.turn_advantage_weight`` times that node's advantage, added to the
     episode-level one (``turn_advantages``): the advantages become ``(N, T)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from agentrl.algos import TurnNode, turn_advantages
from agentrl.types import Trajectory, TrajectoryGroup

if TYPE_CHECKING:
    from agentrl.train.config import TrainConfig


@dataclass
class AdvantageResult:
    trajectories: list[Trajectory]
    advantages: torch.Tensor  # (N,) or (N, T) with turn-level credit
    drop: list[bool]  # True: no loss for this row
    metrics: dict[str, float] = field(default_factory=dict)


def _component_tensors(trajs: list[Trajectory]) -> dict[str, torch.Tensor]:
    names = sorted({k for t in trajs for k in t.reward_components})
    return {
        k: torch.tensor([t.reward_components.get(k, 0.0) for t in trajs], dtype=torch.float64)
        for k in names
    }


def compute_advantages(groups: list[TrajectoryGroup], cfg: TrainConfig) -> AdvantageResult:
    """Episode-level advantages for root groups (see the module docstring for the order)."""
    from agentrl.algos import component_stats, gfpo_keep, vector_advantages

    roots = [g for g in groups if g.level == "episode"]
    trajs = [t for g in roots for t in g.trajectories]
    n = len(trajs)
    gid = torch.tensor([i for i, g in enumerate(roots) for _ in g.trajectories], dtype=torch.long)
    ok = torch.tensor([t.status != "failed" for t in trajs], dtype=torch.bool)
    weights = dict(trajs[0].reward_weights) if trajs else {}
    weights.update(cfg.env.reward_weights)
    comps = _component_tensors(trajs)
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float64)
    keep = ok.clone()
    metrics: dict[str, float] = {}
    if cfg.filters.gfpo_k is not None and n:
        lengths = torch.tensor([max(t.num_generated, 1) for t in trajs], dtype=torch.float64)
        sub = ok.nonzero().squeeze(-1)
        kept_sub = gfpo_keep(rewards[sub], lengths[sub], gid[sub], cfg.filters.gfpo_k,
                             metric=cfg.filters.gfpo_metric)
        keep = torch.zeros(n, dtype=torch.bool)
        keep[sub[kept_sub]] = True
        metrics["filter/gfpo_kept"] = float(keep.sum())
    adv = torch.zeros(n, dtype=torch.float64)
    idx = keep.nonzero().squeeze(-1)
    if idx.numel():
        adv[idx] = vector_advantages(
            {k: v[idx] for k, v in comps.items()}, weights, gid[idx],
            mode=cfg.algo.advantage_mode, scale=cfg.algo.advantage_scale,
        ).to(torch.float64)
        stats = component_stats({k: v[idx] for k, v in comps.items()}, weights, gid[idx],
                                scale=cfg.algo.advantage_scale)
        metrics.update({k: v for k, v in stats.items() if k.startswith("adv_share/")})
    drop = [not bool(keep[i]) for i in range(n)]
    if cfg.filters.mask_truncated:
        drop = [d or t.status == "truncated" for d, t in zip(drop, trajs, strict=True)]
        metrics["filter/truncated_masked"] = float(sum(t.status == "truncated" for t in trajs))
    metrics["adv/abs_mean"] = float(adv.abs().mean()) if n else 0.0
    metrics["adv/nonzero_frac"] = float((adv != 0).double().mean()) if n else 0.0
    nodes = _turn_nodes(roots, trajs)
    if nodes and cfg.algo.turn_advantage_weight > 0:
        slots = max(len(t.token_ids) for t in trajs) - 1
        adv = turn_advantages(adv, slots, nodes, weight=cfg.algo.turn_advantage_weight,
                              scale=cfg.algo.advantage_scale)  # (N, T)
        metrics["adv/turn_nodes"] = float(len(nodes))
    return AdvantageResult(trajs, adv.float(), drop, metrics)


def _turn_nodes(roots: list[TrajectoryGroup], trajs: list[Trajectory]) -> list[TurnNode]:
    """Branching nodes of tree rollouts in batch coordinates (slot = token position - 1)."""
    from agentrl.rollout import turn_groups

    row_of = {id(t): i for i, t in enumerate(trajs)}
    nodes = []
    for group in roots:
        for node in turn_groups(group):
            if len(node) > 1 and all(id(t) in row_of for t in node.trajectories):
                rows = [row_of[id(t)] for t in node.trajectories]
                nodes.append(TurnNode.from_group(node, rows, offset=1))
    return nodes

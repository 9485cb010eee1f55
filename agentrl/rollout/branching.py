"""Branching policies: how the episodes of one task fan out, inside a hard budget.

Every policy is the same mechanism seen differently: a *path* runs turns one after another,
and before turn ``d`` the policy says into how many children the path splits there. Children
share the parent's token ids (generated once) and each samples its own turn ``d``.

- ``independent``: ``G`` children at turn 0 and none later: ``G`` full episodes that share only
  the prompt, grouped at the root. Cost is linear in turns: ``G * T`` generated turns.
- ``tree``: ``branch_factor`` children at each turn in ``branch_turns`` (default: the first
  ``ceil(log_k G)`` turns, which yields ``G`` leaves), capped by ``max_leaves`` (default ``G``)
  and ``max_nodes`` (generated turns per task). Siblings share their prefix; each branching
  node's children form a turn-level group (see :func:`turn_groups`).
- ``per_turn``: the naive scheme, ``G`` samples at *every* turn: ``G**T`` leaves and
  ``G + G**2 + ... + G**T`` generated turns (only sensible as a baseline).

Identical states are merged (``tree`` only, ``merge_identical``): when a path reaches the same
feedback history as another path of the task at the same depth, it is not expanded; the
surviving path's ``multiplicity`` counts it, and every leaf below carries the product of the
multiplicities on its way in ``Trajectory.metadata["multiplicity"]``, so group statistics can
weight it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentrl.registry import Registry
from agentrl.types import Trajectory, TrajectoryGroup

__all__ = ["BRANCHING", "BranchPlan", "TreeBudget", "turn_groups"]


@dataclass(frozen=True)
class BranchPlan:
    """The resolved shape of one task's rollout tree."""

    group_size: int
    branch_turns: frozenset[int]
    branch_factor: int
    max_leaves: int
    max_nodes: int | None
    merge_identical: bool

    def wanted_children(self, depth: int) -> int:
        """Children the policy asks for before turn ``depth`` (before any cap)."""
        return self.branch_factor if depth in self.branch_turns else 1


BranchPlanner = Callable[[int, int, Any], BranchPlan]
BRANCHING: Registry[BranchPlanner] = Registry("branching policy")


@BRANCHING.register("independent")
def _independent(group_size: int, max_turns: int, cfg: Any) -> BranchPlan:
    return BranchPlan(group_size, frozenset({0}), group_size, group_size, cfg.max_nodes, False)


@BRANCHING.register("tree")
def _tree(group_size: int, max_turns: int, cfg: Any) -> BranchPlan:
    k = cfg.branch_factor
    turns = cfg.branch_turns
    if turns is None:
        levels = max(1, math.ceil(math.log(group_size, k) - 1e-9)) if group_size > 1 else 0
        turns = list(range(min(levels, max_turns)))
    leaves = cfg.max_leaves if cfg.max_leaves is not None else group_size
    return BranchPlan(group_size, frozenset(turns), k, leaves, cfg.max_nodes, cfg.merge_identical)


@BRANCHING.register("per_turn")
def _per_turn(group_size: int, max_turns: int, cfg: Any) -> BranchPlan:
    leaves = cfg.max_leaves if cfg.max_leaves is not None else group_size**max_turns
    return BranchPlan(group_size, frozenset(range(max_turns)), group_size, leaves, cfg.max_nodes, False)


@dataclass
class TreeBudget:
    """Counts of one task's tree; :meth:`grant` never lets them pass the caps.

    ``paths`` counts live paths plus finished leaves (every path ends as at most one leaf);
    ``nodes`` counts generated turns.
    """

    plan: BranchPlan
    paths: int = 1
    nodes: int = 0
    merged: int = 0
    states: dict[tuple[int, tuple[str, ...]], tuple[int, ...]] = field(default_factory=dict)
    multiplicity: dict[tuple[int, tuple[int, ...]], int] = field(default_factory=dict)

    def grant(self, depth: int) -> int:
        """How many children a path gets before turn ``depth`` (0: the node budget is spent).

        Reserves the new paths and the children's generated turns at once.
        """
        want = self.plan.wanted_children(depth)
        room_paths = self.plan.max_leaves - self.paths + 1  # this path itself is already counted
        k = max(1, min(want, room_paths))
        if self.plan.max_nodes is not None:
            k = min(k, self.plan.max_nodes - self.nodes)
        if k <= 0:
            return 0
        self.paths += k - 1
        self.nodes += k
        return k

    def merge(self, depth: int, feedback_history: tuple[str, ...], path: tuple[int, ...]) -> bool:
        """Register the state a path reached after turn ``depth``; True: merge it (stop it).

        The first path to reach a state owns it; later ones only raise its multiplicity and
        give their leaf slot back to the budget.
        """
        if not self.plan.merge_identical:
            return False
        key = (depth, feedback_history)
        owner = self.states.setdefault(key, path)
        if owner == path:
            return False
        self.multiplicity[(depth, owner)] = self.multiplicity.get((depth, owner), 1) + 1
        self.merged += 1
        self.paths -= 1
        return True

    def leaf_multiplicity(self, states: list[tuple[int, tuple[int, ...]]]) -> int:
        """Product of the multiplicities of the ``(depth, path)`` states a leaf passed through."""
        return math.prod(self.multiplicity.get(s, 1) for s in states)


def turn_groups(group: TrajectoryGroup) -> list[TrajectoryGroup]:
    """Turn-level groups of a tree rollout: one per branching node with at least two children.

    Each holds the leaves below the node (``prefix_length`` = the node's token position, where
    the siblings' own tokens start); ``metadata["child"]`` gives, per leaf, which child it
    descends from, so advantages can compare children (e.g. by the mean reward of their leaves).
    """
    nodes: dict[tuple[int, ...], list[tuple[int, Trajectory]]] = {}
    positions: dict[tuple[int, ...], int] = {}
    for traj in group.trajectories:
        path = tuple(traj.metadata.get("path", ()))
        for level, pos in enumerate(traj.branch_points):
            if level >= len(path):
                break
            node = path[:level]
            nodes.setdefault(node, []).append((path[level], traj))
            positions[node] = pos
    out = []
    for node, members in sorted(nodes.items()):
        if len({child for child, _ in members}) < 2:
            continue
        out.append(TrajectoryGroup(
            group_id=f"{group.group_id}/{'.'.join(map(str, node)) or 'root'}",
            trajectories=[t for _, t in members],
            level="turn",
            prefix_length=positions[node],
            metadata={"child": [c for c, _ in members], "node": list(node)},
        ))
    return out

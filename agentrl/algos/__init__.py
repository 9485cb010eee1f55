"""The algorithms: pure tensor functions in registries (losses, advantages, filters, KL).

Public API (stable; see DESIGN.md)::

    policy_loss(name, logp, old_logp, advantages, mask, **overrides) -> LossOutput
    group_advantages(rewards, group_ids, scale="std", eps=1e-6)
    vector_advantages(components, weights, group_ids, mode="sum_then_normalize", scale="std", eps=1e-6)
    gfpo_keep(rewards, lengths, group_ids, k, metric="length")
    kl_penalty(logp, ref_logp, estimator="k3")
    turn_advantages(episode_adv, num_slots, nodes, weight=1.0, scale="std", eps=1e-6, mode="add")
    component_stats(components, weights, group_ids, scale="std")

Registered: losses ``grpo`` (arXiv 2402.03300), ``dr_grpo`` (2503.20783), ``dapo``
(2503.14476), ``gspo`` and ``gspo_token`` (2507.18071), ``ppo`` (1707.06347 + dual clip
1912.09729); advantages ``grpo`` (std-scaled) and ``dr_grpo`` (centred only); filters
``dynamic_sampling`` (DAPO) and ``gfpo`` (2508.09726); KL estimators ``k1``, ``k2``, ``k3``.
"""

from agentrl.algos.advantages import (
    ADVANTAGES,
    TURN_MODES,
    TurnNode,
    component_stats,
    group_advantages,
    turn_advantages,
    vector_advantages,
)
from agentrl.algos.aggregation import AGGREGATIONS, aggregate, normaliser_share
from agentrl.algos.filters import (
    FILTERS,
    adaptive_k,
    dynamic_sampling,
    dynamic_sampling_mask,
    gfpo_advantages,
    gfpo_keep,
    mask_truncated,
    overlong_penalty,
)
from agentrl.algos.kl import KL_ESTIMATORS, kl_penalty
from agentrl.algos.losses import (
    LOSSES,
    LossOutput,
    LossSpec,
    aggregation_of,
    clipped_surrogate,
    policy_loss,
    register_loss,
    sequence_ratio,
    token_ratio,
)

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "FILTERS",
    "KL_ESTIMATORS",
    "LOSSES",
    "TURN_MODES",
    "LossOutput",
    "LossSpec",
    "TurnNode",
    "adaptive_k",
    "aggregate",
    "aggregation_of",
    "clipped_surrogate",
    "component_stats",
    "dynamic_sampling",
    "dynamic_sampling_mask",
    "gfpo_advantages",
    "gfpo_keep",
    "group_advantages",
    "kl_penalty",
    "mask_truncated",
    "normaliser_share",
    "overlong_penalty",
    "policy_loss",
    "register_loss",
    "sequence_ratio",
    "token_ratio",
    "turn_advantages",
    "vector_advantages",
]

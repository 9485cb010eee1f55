"""Policy-gradient losses as pure tensor functions in one registry.

Every loss is the *negated* objective. Shapes: ``logp``, ``old_logp``, ``mask`` are ``(B, T)``;
advantages are ``(B,)`` (broadcast over tokens) or ``(B, T)``; advantages are constants (no
gradient). Padded positions may hold anything, NaN included: they are replaced by zeros with
``torch.where`` *before* any arithmetic, so they get exactly zero weight and zero gradient.

A registered loss maps ``(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip)`` to the
per-token loss ``(B, T)`` and the ratio it clipped ``(B, T)``; ``policy_loss`` runs one pipeline
for all of them::

    L_t  = registered body (ratio, clipped surrogate)           # this module
    L_t += beta * KL_t(logp, ref_logp)                          # optional, kl.py
    L_t *= sg(min(exp(old_logp - rollout_logp), C))             # optional TIS
    loss = aggregate(L, mask, agg)                              # aggregation.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from agentrl.algos.aggregation import AGGREGATIONS, aggregate
from agentrl.algos.kl import kl_penalty
from agentrl.algos.metrics import masked_mean, ratio_metrics
from agentrl.registry import Registry

Tensor = torch.Tensor
# (logp, old_logp, adv, mask, eps_low, eps_high, dual_clip) -> (per-token loss, ratio), (B, T) each
LossBody = Callable[
    [Tensor, Tensor, Tensor, Tensor, float, float, "float | None"], tuple[Tensor, Tensor]
]


@dataclass
class LossOutput:
    """The scalar loss and plain-float metrics (clip fractions, ratio stats, KL, entropy)."""

    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its body and its paper's defaults."""

    body: LossBody
    eps_low: float
    eps_high: float
    agg: str
    sequence_level: bool = False
    dual_clip: float | None = None
    paper: str = ""


LOSSES: Registry[LossSpec] = Registry("policy loss")


def register_loss(
    name: str,
    *,
    eps_low: float,
    eps_high: float,
    agg: str,
    paper: str,
    sequence_level: bool = False,
    dual_clip: float | None = None,
) -> Callable[[LossBody], LossBody]:
    """Decorator: register a loss body under ``name`` with its defaults."""

    def add(body: LossBody) -> LossBody:
        LOSSES.register(
            name, LossSpec(body, eps_low, eps_high, agg, sequence_level, dual_clip, paper)
        )
        return body

    return add


# ---- shared pieces -----------------------------------------------------------------------------
def clipped_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, dual_clip: float | None = None
) -> Tensor:
    """Per-token ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` (PPO, arXiv 1707.06347 eq. 7).

    With ``dual_clip = c`` (Ye et al. 2020, arXiv 1912.09729): for ``A < 0`` the objective is
    ``max(min(r A, clip(r) A), c A)``, i.e. the loss is capped at ``-c A``.
    """
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    loss = torch.maximum(unclipped, clipped)  # (B, T) = -min(r A, clip(r) A)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)  # (B, T)
    return loss


def token_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """``r_t = pi_theta(y_t | x, y_<t) / pi_old(y_t | x, y_<t) = exp(logp_t - old_logp_t)``."""
    return torch.exp(logp - old_logp)  # (B, T)


def sequence_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's ``s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(mean_t log r_it)``, ``(B,)``."""
    m = mask.to(logp.dtype)  # (B, T)
    return torch.exp(((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1))  # (B,)


# ---- the registered losses ---------------------------------------------------------------------
@register_loss(
    "grpo",
    eps_low=0.2,
    eps_high=0.2,
    agg="seq_mean_token_mean",
    paper="GRPO, arXiv 2402.03300, eq. 3",
)
def grpo(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """GRPO (Shao et al. 2024, arXiv 2402.03300), eq. 3::

        J = E[ 1/G sum_i 1/|o_i| sum_t { min(r_it A_it, clip(r_it, 1-eps, 1+eps) A_it) - beta D_KL } ]

    The ``1/G sum_i 1/|o_i| sum_t`` is the ``seq_mean_token_mean`` aggregation and
    ``beta D_KL`` (eq. 4, the k3 estimator) is added per token by ``policy_loss``.
    """
    r = token_ratio(logp, old_logp)  # (B, T)
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


@register_loss(
    "dr_grpo",
    eps_low=0.2,
    eps_high=0.2,
    agg="constant",
    paper="Dr. GRPO, arXiv 2503.20783, sec. 3.1 (Fig. 1, Listing 1)",
)
def dr_grpo(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783), sec. 3.1 and Fig. 1::

        J = E[ 1/G sum_i sum_t min(r_it A_i, clip(r_it, 1-eps, 1+eps) A_i) ],  A_i = R_i - mean(R)

    GRPO without its ``1/|o_i|`` and ``std`` terms. The token sum is divided by the constant
    ``B * max_tokens`` (``constant`` aggregation, the paper's Listing 1), so no response length
    biases the gradient; pair it with ``group_advantages(scale="none")``.
    """
    r = token_ratio(logp, old_logp)  # (B, T)
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


@register_loss(
    "dapo",
    eps_low=0.2,
    eps_high=0.28,
    agg="token_mean",
    paper="DAPO, arXiv 2503.14476, eq. 8 (clip-higher eq. 10, token-level eq. 12)",
)
def dapo(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """DAPO (Yu et al. 2025, arXiv 2503.14476), eq. 8::

        J = E[ 1/sum_i |o_i| sum_i sum_t min(r_it A_it, clip(r_it, 1-eps_low, 1+eps_high) A_it) ]
        s.t. 0 < |{o_i : is_equivalent(a, o_i)}| < G

    Clip-higher ``eps_high = 0.28 > eps_low = 0.2``; the ``1 / sum_i |o_i|`` is the
    ``token_mean`` aggregation over the whole batch; the constraint is the
    ``dynamic_sampling`` filter (filters.py).
    """
    r = token_ratio(logp, old_logp)  # (B, T)
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


@register_loss(
    "gspo",
    eps_low=3e-4,
    eps_high=4e-4,
    agg="seq_mean",
    sequence_level=True,
    paper="GSPO, arXiv 2507.18071, eq. 5 and 7",
)
def gspo(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """GSPO (Zheng et al. 2025, arXiv 2507.18071), eq. 5 with the ratio of eq. 7::

        J = E[ 1/G sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i) ]
        s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(1/|y_i| sum_t log r_it)

    The sequence loss is returned broadcast on every token of the sequence; the aggregation
    takes its masked token mean, which is the sequence loss itself. With ``(B, T)`` advantages
    (an extension: the paper's ``A_i`` is per sequence) each token uses ``s_i`` with its own
    ``A_it`` and the sequence loss is the mean over its tokens.
    """
    s = sequence_ratio(logp, old_logp, mask)  # (B,)
    r = s.unsqueeze(-1).expand_as(logp)  # (B, T): s_i on every token of sequence i
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


@register_loss(
    "gspo_token",
    eps_low=3e-4,
    eps_high=4e-4,
    agg="seq_mean_token_mean",
    paper="GSPO-token, arXiv 2507.18071, eq. 13 and 14",
)
def gspo_token(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """GSPO-token (arXiv 2507.18071), eq. 13 with the ratio of eq. 14::

        J = E[ 1/G sum_i 1/|y_i| sum_t min(s_it A_it, clip(s_it, 1-eps_low, 1+eps_high) A_it) ]
        s_it = sg[s_i] * pi_theta(y_it | x, y_i<t) / sg[pi_theta(y_it | x, y_i<t)]

    ``s_it`` has the value of ``s_i`` and the gradient ``s_i * grad log pi_theta(y_it)``, so
    the loss equals GSPO's in value, and in gradient when ``A_it = A_i``.
    """
    s = sequence_ratio(logp, old_logp, mask).detach()  # (B,) sg[s_i]
    r = s.unsqueeze(-1) * torch.exp(logp - logp.detach())  # (B, T)
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


@register_loss(
    "ppo",
    eps_low=0.2,
    eps_high=0.2,
    agg="token_mean",
    dual_clip=3.0,
    paper="PPO-clip, arXiv 1707.06347 eq. 7; dual clip, arXiv 1912.09729",
)
def ppo(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """PPO-clip (Schulman et al. 2017, arXiv 1707.06347), eq. 7, with dual clip (arXiv 1912.09729)::

    L^CLIP = E_t[ min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t) ]
    dual clip, A_t < 0:  max(min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t), c A_t),  c = 3
    """
    r = token_ratio(logp, old_logp)  # (B, T)
    return clipped_surrogate(r, adv, eps_low, eps_high, dual_clip), r


# ---- the pipeline ------------------------------------------------------------------------------
def aggregation_of(name: str, agg: str | None = None) -> str:
    """The aggregation ``policy_loss(name, agg=agg)`` uses."""
    return agg if agg is not None else LOSSES.get(name).agg


def _check_shapes(logp: Tensor, advantages: Tensor, **same: Tensor | None) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp: expected shape (B, T), got {tuple(logp.shape)}")
    for arg, t in same.items():
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{arg}: shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages: shape {tuple(advantages.shape)} must be (B,) = {tuple(logp.shape[:1])} "
            f"or (B, T) = {tuple(logp.shape)}"
        )


def _check_options(name: str, o: dict[str, Any]) -> None:
    for arg in ("eps_low", "eps_high", "beta"):
        if o[arg] < 0:
            raise ValueError(f"{arg}: must be >= 0, got {o[arg]}")
    if o["agg"] not in AGGREGATIONS:
        raise ValueError(f"agg: unknown aggregation {o['agg']!r}; valid: {', '.join(AGGREGATIONS)}")
    if o["agg"] == "constant" and (o["max_tokens"] is None or o["max_tokens"] <= 0):
        raise ValueError(
            f"max_tokens: {name} with the constant normaliser needs max_tokens > 0 "
            f"(loss = token sum / (B x max_tokens)), got {o['max_tokens']}"
        )
    if o["dual_clip"] is not None and o["dual_clip"] <= 1.0:
        raise ValueError(f"dual_clip: must be > 1, got {o['dual_clip']}")
    if o["tis_cap"] is not None and o["tis_cap"] <= 0:
        raise ValueError(f"tis_cap: must be > 0, got {o['tis_cap']}")
    if o["beta"] > 0 and o["ref_logp"] is None:
        raise ValueError(
            "ref_logp: beta > 0 adds a KL penalty to the reference, which needs ref_logp"
        )


def policy_loss(
    name: str,
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float | None = None,
    eps_high: float | None = None,
    agg: str | None = None,
    max_tokens: int | None = None,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl: str = "k3",
    rollout_logp: Tensor | None = None,
    tis_cap: float | None = None,
    dual_clip: float | None = None,
    entropy: Tensor | None = None,
) -> LossOutput:
    """The registered loss ``name`` on a batch, negated objective (see the module docstring).

    Args:
        name: ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``gspo_token`` or ``ppo``.
        logp: current policy log-probs of the sampled tokens, ``(B, T)``.
        old_logp: log-probs under the policy that sampled them (pi_old), ``(B, T)``.
        advantages: ``(B,)`` or ``(B, T)``, treated as constants.
        mask: ``(B, T)``, 1 for tokens in the loss; other slots may hold garbage (even NaN).
        eps_low: lower clip, ratio >= ``1 - eps_low`` (default per loss).
        eps_high: upper clip, ratio <= ``1 + eps_high`` (default per loss).
        agg: ``token_mean``, ``seq_mean_token_mean``, ``seq_mean`` or ``constant``.
        max_tokens: generation budget, the constant normaliser ``B * max_tokens`` of
            ``dr_grpo`` (required there) and of ``agg="constant"``.
        ref_logp: reference log-probs ``(B, T)``; with ``beta > 0`` adds ``beta * KL_t``.
        beta: KL coefficient (0 = off; the KL is still reported when ``ref_logp`` is given).
        kl: KL estimator ``k1``, ``k2`` or ``k3``.
        rollout_logp: log-probs from the inference engine ``(B, T)``; each token's loss is
            multiplied by ``min(exp(old_logp - rollout_logp), tis_cap)``, detached.
        tis_cap: truncation cap ``C`` of that weight (``None`` = no cap).
        dual_clip: PPO dual-clip constant ``c > 1`` (default 3 for ``ppo``, off otherwise).
        entropy: optional per-token entropy ``(B, T)`` for the metrics.

    Returns:
        ``LossOutput(loss, metrics)``: the scalar loss and float metrics ``clip_frac_low``,
        ``clip_frac_high``, ``ratio_mean/min/max``, and where they apply ``dual_clip_frac``,
        ``kl``, ``tis_weight_mean``, ``entropy``.
    """
    spec = LOSSES.get(name)
    _check_shapes(
        logp,
        advantages,
        old_logp=old_logp,
        mask=mask,
        ref_logp=ref_logp,
        rollout_logp=rollout_logp,
        entropy=entropy,
    )
    o = {
        "eps_low": spec.eps_low if eps_low is None else eps_low,
        "eps_high": spec.eps_high if eps_high is None else eps_high,
        "agg": aggregation_of(name, agg),
        "max_tokens": max_tokens,
        "beta": beta,
        "dual_clip": spec.dual_clip if dual_clip is None else dual_clip,
        "tis_cap": tis_cap,
        "ref_logp": ref_logp,
    }
    _check_options(name, o)

    m = mask.bool()  # (B, T)
    lp = _clean(logp, m)  # (B, T): garbage -> 0 before any arithmetic
    old = _clean(old_logp, m).detach()  # (B, T)
    adv = advantages.unsqueeze(-1).expand_as(logp) if advantages.dim() == 1 else advantages
    adv = _clean(adv.to(logp.dtype), m).detach()  # (B, T)

    per_token, ratio = spec.body(lp, old, adv, m, o["eps_low"], o["eps_high"], o["dual_clip"])
    metrics = ratio_metrics(ratio, adv, m, o["eps_low"], o["eps_high"], o["dual_clip"])
    if ref_logp is not None:
        kl_t = kl_penalty(lp, _clean(ref_logp, m).detach(), kl)  # (B, T)
        metrics["kl"] = masked_mean(kl_t.detach(), m)
        if beta > 0:
            per_token = per_token + beta * kl_t  # (B, T)
    if rollout_logp is not None:
        w = torch.exp(old - _clean(rollout_logp, m).detach())  # (B, T)
        w = w.clamp(max=tis_cap) if tis_cap is not None else w
        per_token = per_token * w  # (B, T)
        metrics["tis_weight_mean"] = masked_mean(w, m)
    if entropy is not None:
        metrics["entropy"] = masked_mean(_clean(entropy, m).detach(), m)
    per_token = _clean(per_token, m)  # (B, T)
    loss = aggregate(
        per_token, m, o["agg"], max_tokens=max_tokens, sequence_level=spec.sequence_level
    )
    return LossOutput(loss=loss, metrics=metrics)


def _clean(x: Tensor, m: Tensor) -> Tensor:
    """``x`` where the mask is set, exactly 0 elsewhere (no NaN can leak, not even in grads)."""
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))

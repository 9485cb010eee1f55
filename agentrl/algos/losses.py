"""Policy-gradient losses as pure tensor functions in one registry.

Every loss is the *negated* objective. Shapes: ``logp``, ``old_logp``, ``mask`` are ``(B, T)``;
advantages are ``(B,)`` (broadcast over tokens) or ``(B, T)``; advantages are constants (no
gradient). Padded positions may hold anything, NaN included: they are replaced by zeros with
``torch.where`` *before* any arithmetic, so they get exactly zero weight and zero gradient.

``policy_loss`` runs one pipeline for all of them::

    r            = ratio (token or sequence level)            # the registered function
    L_t          = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)   (+ dual clip for PPO)
    L_t         += beta * KL_t(logp, ref_logp)                  # optional, per token
    L_t         *= sg(min(exp(old_logp - rollout_logp), C))     # optional TIS, per token
    loss         = aggregate(L, mask, agg)                      # aggregation.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from agentrl.algos.aggregation import AGGREGATIONS, aggregate
from agentrl.algos.kl import kl_penalty
from agentrl.registry import Registry


@dataclass
class LossOutput:
    """The scalar loss and plain-float metrics (clip fractions, ratio stats, KL, entropy)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


# A loss body: (logp, old_logp, adv, mask, eps_low, eps_high, dual_clip) -> (per-token L, ratio)
LossBody = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its body and its defaults."""

    body: LossBody
    eps_low: float
    eps_high: float
    agg: str
    sequence_level: bool = False
    dual_clip: float | None = None
    paper: str = ""


LOSSES: Registry[LossSpec] = Registry("policy loss")


def _clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) = max(-r A, -clip(r) A)."""
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # (B, T)
    return torch.maximum(unclipped, clipped)


def token_ratio_body(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """r_t = pi_theta(y_t | x, y_<t) / pi_old(y_t | x, y_<t) = exp(logp_t - old_logp_t)."""
    ratio = torch.exp(logp - old_logp)  # (B, T)
    loss = _clipped_surrogate(ratio, adv, eps_low, eps_high)  # (B, T)
    if dual_clip is not None:
        # Dual clip (Ye et al. 2020): for A < 0 the loss is capped at -c * A = c * |A|.
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)
    return loss, ratio


def _seq_log_ratio(logp, old_logp, mask):
    m = mask.to(logp.dtype)
    return ((logp - old_logp) * m).sum(-1) / m.sum(-1).clamp(min=1)  # (B,)


def gspo_body(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(mean_t (logp - old_logp))."""
    s = torch.exp(_seq_log_ratio(logp, old_logp, mask))  # (B,)
    ratio = s.unsqueeze(-1).expand_as(logp)  # (B, T): the sequence ratio on every token
    return _clipped_surrogate(ratio, adv, eps_low, eps_high), ratio


def gspo_token_body(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=None):
    """s_it = sg(s_i) * pi_theta(y_it) / sg(pi_theta(y_it)): the value of s_i, a token's gradient."""
    s = torch.exp(_seq_log_ratio(logp, old_logp, mask)).detach()  # (B,)
    ratio = s.unsqueeze(-1) * torch.exp(logp - logp.detach())  # (B, T)
    return _clipped_surrogate(ratio, adv, eps_low, eps_high), ratio


def register_loss(name: str, spec: LossSpec) -> LossSpec:
    return LOSSES.register(name, spec)


register_loss("grpo", LossSpec(token_ratio_body, 0.2, 0.2, "seq_mean_token_mean",
                               paper="GRPO, arXiv 2402.03300, eq. 3"))
register_loss("dr_grpo", LossSpec(token_ratio_body, 0.2, 0.2, "constant",
                                  paper="Dr. GRPO, arXiv 2503.20783, eq. 2 (constant normaliser)"))
register_loss("dapo", LossSpec(token_ratio_body, 0.2, 0.28, "token_mean",
                               paper="DAPO, arXiv 2503.14476, eq. 8 (clip-higher, token-level)"))
register_loss("gspo", LossSpec(gspo_body, 3e-4, 4e-4, "seq_mean", sequence_level=True,
                               paper="GSPO, arXiv 2507.18071, eq. 5-7"))
register_loss("gspo_token", LossSpec(gspo_token_body, 3e-4, 4e-4, "seq_mean_token_mean",
                                     paper="GSPO-token, arXiv 2507.18071, eq. 13-14"))
register_loss("ppo", LossSpec(token_ratio_body, 0.2, 0.2, "token_mean", dual_clip=3.0,
                              paper="PPO-clip, arXiv 1707.06347 eq. 7; dual clip, arXiv 1912.09729"))


def aggregation_of(name: str, agg: str | None = None) -> str:
    """The aggregation ``policy_loss(name, agg=agg)`` uses."""
    return agg if agg is not None else LOSSES.get(name).agg


def _check_inputs(logp, old_logp, advantages, mask) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp: expected shape (B, T), got {tuple(logp.shape)}")
    for arg, t in (("old_logp", old_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(f"{arg}: shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages: shape {tuple(advantages.shape)} must be (B,) = {tuple(logp.shape[:1])} "
            f"or (B, T) = {tuple(logp.shape)}"
        )


def policy_loss(
    name: str,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float | None = None,
    eps_high: float | None = None,
    agg: str | None = None,
    max_tokens: int | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    kl: str = "k3",
    rollout_logp: torch.Tensor | None = None,
    tis_cap: float | None = None,
    dual_clip: float | None = None,
    entropy: torch.Tensor | None = None,
) -> LossOutput:
    """The registered loss ``name`` on a batch; see the module docstring for the pipeline.

    Args:
        name: ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``gspo_token`` or ``ppo``.
        logp: current policy log-probs of the sampled tokens, ``(B, T)``.
        old_logp: log-probs under the policy that sampled them (pi_old), ``(B, T)``.
        advantages: ``(B,)`` or ``(B, T)``, treated as constants.
        mask: ``(B, T)``, 1 for tokens in the loss.
        eps_low, eps_high: clip range ``[1 - eps_low, 1 + eps_high]`` (defaults per loss).
        agg: aggregation override (see ``aggregation.py``).
        max_tokens: generation budget, the constant normaliser of ``dr_grpo`` / ``constant``.
        ref_logp, beta, kl: add ``beta * KL_kl(logp, ref_logp)`` to every token's loss.
        rollout_logp, tis_cap: truncated importance sampling for rollout/training mismatch:
            each token's loss is multiplied by ``min(exp(old_logp - rollout_logp), tis_cap)``,
            detached.
        dual_clip: PPO dual-clip constant ``c`` (default 3 for ``ppo``, off otherwise).
        entropy: optional per-token entropy ``(B, T)`` for the metrics.
    """
    spec = LOSSES.get(name)
    _check_inputs(logp, old_logp, advantages, mask)
    eps_low = spec.eps_low if eps_low is None else eps_low
    eps_high = spec.eps_high if eps_high is None else eps_high
    for arg, v in (("eps_low", eps_low), ("eps_high", eps_high)):
        if v < 0:
            raise ValueError(f"{arg}: must be >= 0, got {v}")
    agg = aggregation_of(name, agg)
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg: unknown aggregation {agg!r}; valid: {', '.join(AGGREGATIONS)}")
    if agg == "constant" and max_tokens is None:
        raise ValueError(f"max_tokens: {name} with the constant normaliser needs max_tokens (B x max_tokens)")
    dual_clip = spec.dual_clip if dual_clip is None else dual_clip
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip: must be > 1, got {dual_clip}")

    m = mask.bool()  # (B, T)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    lp = torch.where(m, logp, zero)  # (B, T) garbage -> 0 before any arithmetic
    old = torch.where(m, old_logp, zero).detach()  # (B, T)
    adv = advantages.unsqueeze(-1).expand_as(logp) if advantages.dim() == 1 else advantages
    adv = torch.where(m, adv.to(logp.dtype), zero).detach()  # (B, T)

    per_token, ratio = spec.body(lp, old, adv, m, eps_low, eps_high, dual_clip)  # (B, T)
    metrics = _ratio_metrics(ratio, adv, m, eps_low, eps_high)
    if dual_clip is not None:
        capped = m & (adv < 0) & (-ratio * adv > -dual_clip * adv)
        metrics["dual_clip_frac"] = _frac(capped, m)
    if beta and ref_logp is not None:
        kl_t = kl_penalty(lp, torch.where(m, ref_logp, zero).detach(), kl)  # (B, T)
        per_token = per_token + beta * kl_t
        metrics["kl"] = float((kl_t.detach() * m).sum() / m.sum().clamp(min=1))
    elif ref_logp is not None:
        metrics["kl"] = float((kl_penalty(lp.detach(), torch.where(m, ref_logp, zero), kl) * m).sum()
                              / m.sum().clamp(min=1))
    if rollout_logp is not None:
        cap = float("inf") if tis_cap is None else tis_cap
        w = torch.exp(old - torch.where(m, rollout_logp, zero).detach()).clamp(max=cap)  # (B, T)
        per_token = per_token * w
        metrics["tis_weight_mean"] = float((w * m).sum() / m.sum().clamp(min=1))
    per_token = torch.where(m, per_token, zero)  # (B, T)
    loss = aggregate(per_token, m, agg, max_tokens=max_tokens, sequence_level=spec.sequence_level)
    if entropy is not None:
        metrics["entropy"] = float((torch.where(m, entropy, zero) * m).sum() / m.sum().clamp(min=1))
    return LossOutput(loss=loss, metrics=metrics)


def _frac(x: torch.Tensor, m: torch.Tensor) -> float:
    return float((x & m).sum() / m.sum().clamp(min=1))


def _ratio_metrics(ratio, adv, m, eps_low, eps_high) -> dict[str, Any]:
    r = ratio.detach()
    if not m.any():
        return {"clip_frac_low": 0.0, "clip_frac_high": 0.0, "ratio_mean": 1.0, "ratio_min": 1.0, "ratio_max": 1.0}
    return {
        # the clip is active (gradient cut) when the ratio left the range in A's direction
        "clip_frac_low": _frac((r < 1.0 - eps_low) & (adv < 0), m),
        "clip_frac_high": _frac((r > 1.0 + eps_high) & (adv > 0), m),
        "ratio_mean": float(r[m].mean()),
        "ratio_min": float(r[m].min()),
        "ratio_max": float(r[m].max()),
    }

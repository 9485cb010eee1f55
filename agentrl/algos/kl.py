"""KL estimators between the policy and a reference (Schulman, "Approximating KL divergence").

With ``x = ref_logp - logp`` (log of the ratio p_ref / p_theta at the sampled token):

* ``k1 = logp - ref_logp = -x``              unbiased, high variance, can be negative
* ``k2 = (logp - ref_logp)^2 / 2 = x^2 / 2``  biased, low variance
* ``k3 = exp(x) - x - 1``                    unbiased, always >= 0 (GRPO, arXiv 2402.03300 eq. 4)
"""

from __future__ import annotations

import torch

from agentrl.registry import Registry

KL_ESTIMATORS: Registry = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def _k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def _k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def _k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    x = ref_logp - logp
    return torch.exp(x) - x - 1.0


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL estimate ``(B, T)`` of the policy from the reference.

    Args:
        logp: policy log-probabilities of the sampled tokens, ``(B, T)``.
        ref_logp: reference log-probabilities of the same tokens, ``(B, T)``.
        estimator: ``"k1"`` (logp - ref), ``"k2"`` ((logp - ref)^2 / 2) or ``"k3"``
            (exp(ref - logp) - (ref - logp) - 1).
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"ref_logp: shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}"
        )
    return KL_ESTIMATORS.get(estimator)(logp, ref_logp)

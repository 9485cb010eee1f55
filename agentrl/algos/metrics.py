"""Loss metrics as plain Python floats: clip fractions, ratio statistics, masked means."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def masked_mean(x: Tensor, m: Tensor) -> float:
    """Mean of ``x`` over the set mask slots (0.0 when none is set)."""
    return float((x * m).sum() / m.sum().clamp(min=1))


def _frac(x: Tensor, m: Tensor) -> float:
    return float((x & m).sum() / m.sum().clamp(min=1))


def ratio_metrics(
    ratio: Tensor, adv: Tensor, m: Tensor, eps_low: float, eps_high: float, dual_clip: float | None
) -> dict[str, float]:
    """Clip fractions (the clip is active when the ratio left the range in A's direction)."""
    r = ratio.detach()  # (B, T)
    out = {
        "clip_frac_low": 0.0,
        "clip_frac_high": 0.0,
        "ratio_mean": 1.0,
        "ratio_min": 1.0,
        "ratio_max": 1.0,
    }
    if m.any():
        out = {
            "clip_frac_low": _frac((r < 1.0 - eps_low) & (adv < 0), m),
            "clip_frac_high": _frac((r > 1.0 + eps_high) & (adv > 0), m),
            "ratio_mean": float(r[m].mean()),
            "ratio_min": float(r[m].min()),
            "ratio_max": float(r[m].max()),
        }
    if dual_clip is not None:
        out["dual_clip_frac"] = _frac((adv < 0) & (r > dual_clip), m)
    return out

"""Properties of every registered loss (hypothesis): on-policy value, masking, GSPO identities."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.algos import AGGREGATIONS, LOSSES, aggregation_of, policy_loss

NAMES = sorted(LOSSES.names())


# ---- properties ----------------------------------------------------------------------------
shapes = st.tuples(st.integers(1, 4), st.integers(1, 6))


def _rand(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.4).double()
    mask[:, 0] = 1
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return logp, mask, adv


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 10_000),
    name=st.sampled_from(NAMES),
    agg=st.sampled_from([None, *AGGREGATIONS]),
    token_adv=st.booleans(),
)
def test_on_policy_loss_is_minus_masked_mean_advantage(shape, seed, name, agg, token_adv):
    logp, mask, adv = _rand(seed, *shape)
    A = adv.unsqueeze(-1).expand_as(mask)  # (B, T)
    if token_adv:
        A = A + torch.randn(A.shape, generator=torch.Generator().manual_seed(seed), dtype=A.dtype)
    out = policy_loss(
        name, logp, logp.clone(), A if token_adv else adv, mask, agg=agg, max_tokens=8
    )
    agg = aggregation_of(name, agg)
    if agg == "token_mean":
        want = -(A * mask).sum() / mask.sum()
    elif agg == "constant":
        want = -(A * mask).sum() / (shape[0] * 8)
    elif agg == "seq_mean" and not LOSSES.get(name).sequence_level:
        want = -((A * mask).sum(-1)).mean()  # token sum per sequence, mean over sequences
    else:  # seq_mean_token_mean, or seq_mean of a sequence-level loss (its token mean)
        want = -((A * mask).sum(-1) / mask.sum(-1)).mean()
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 10_000),
    name=st.sampled_from(NAMES),
    garbage=st.sampled_from([math.nan, math.inf, -math.inf, 1e30]),
)
def test_masked_tokens_get_exactly_zero_gradient(shape, seed, name, garbage):
    logp, mask, adv = _rand(seed, *shape)
    old = logp + 0.01
    bad = mask == 0
    logp_g = logp.masked_fill(bad, garbage).requires_grad_(True)
    old_g, ref_g, roll_g = (x.masked_fill(bad, garbage) for x in (old, logp - 0.1, old - 0.05))
    adv_t = adv.unsqueeze(-1).expand_as(mask).masked_fill(bad, garbage)
    out = policy_loss(
        name,
        logp_g,
        old_g,
        adv_t,
        mask,
        max_tokens=8,
        ref_logp=ref_g,
        beta=0.1,
        rollout_logp=roll_g,
        tis_cap=2.0,
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert (logp_g.grad[bad] == 0).all()
    assert torch.isfinite(logp_g.grad).all()
    clean = policy_loss(
        name,
        logp.clone().requires_grad_(True),
        old,
        adv,
        mask,
        max_tokens=8,
        ref_logp=logp - 0.1,
        beta=0.1,
        rollout_logp=old - 0.05,
        tis_cap=2.0,
    )
    assert out.loss.item() == pytest.approx(clean.loss.item(), rel=1e-12, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_gspo_with_one_token_per_sequence_equals_token_ratio_loss(B, seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, 1, generator=g, dtype=torch.float64)
    old = logp + 1e-4 * torch.randn(B, 1, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.ones(B, 1)
    kw = dict(eps_low=3e-4, eps_high=4e-4)
    a = policy_loss("gspo", logp, old, adv, mask, **kw).loss
    b = policy_loss("grpo", logp, old, adv, mask, **kw).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_gspo_token_equals_gspo_in_value_and_uniform_advantage_gradient(shape, seed):
    logp, mask, adv = _rand(seed, *shape)
    old = logp + 2e-4 * torch.randn(
        logp.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    grads = []
    for name in ("gspo", "gspo_token"):
        lp = logp.clone().requires_grad_(True)
        out = policy_loss(name, lp, old, adv, mask)
        out.loss.backward()
        grads.append((out.loss.item(), lp.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12, abs=1e-15)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_fully_masked_batch_gives_zero_loss_and_gradient(name):
    lp = torch.full((2, 3), math.nan, dtype=torch.float64, requires_grad=True)
    out = policy_loss(name, lp, lp.detach(), torch.ones(2), torch.zeros(2, 3), max_tokens=4)
    out.loss.backward()
    assert out.loss.item() == 0.0 and (lp.grad == 0).all()

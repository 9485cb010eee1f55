"""Policy losses against slow Python-loop oracles, hand-computed examples and properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.algos import LOSSES, aggregation_of, kl_penalty, policy_loss
from agentrl.registry import UnknownNameError

DEFAULTS = {  # name: (eps_low, eps_high, agg, dual clip)
    "grpo": (0.2, 0.2, "seq_mean_token_mean", None),
    "dr_grpo": (0.2, 0.2, "constant", None),
    "dapo": (0.2, 0.28, "token_mean", None),
    "gspo": (3e-4, 4e-4, "seq_mean", None),
    "gspo_token": (3e-4, 4e-4, "seq_mean_token_mean", None),
    "ppo": (0.2, 0.2, "token_mean", 3.0),
}


# ---- the oracle: plain Python loops over floats, written from the papers --------------------
def _clip(x, lo, hi):
    return min(max(x, lo), hi)


def _surrogate(r, a, el, eh, dual):
    loss = -min(r * a, _clip(r, 1 - el, 1 + eh) * a)
    if dual is not None and a < 0:
        loss = min(loss, -dual * a)
    return loss


def oracle(name, logp, old, adv, mask, max_tokens=None, ref=None, beta=0.0, kl="k3",
           rollout=None, cap=None, agg=None):
    el, eh, default_agg, dual = DEFAULTS[name]
    agg = agg or default_agg
    B, T = len(logp), len(logp[0])
    seq_level = name in ("gspo", "gspo_token")
    per_tok = [[0.0] * T for _ in range(B)]
    for i in range(B):
        toks = [t for t in range(T) if mask[i][t]]
        s = math.exp(sum(logp[i][t] - old[i][t] for t in toks) / max(len(toks), 1))
        for t in toks:
            a = adv[i][t] if isinstance(adv[i], list) else adv[i]
            r = s if seq_level else math.exp(logp[i][t] - old[i][t])
            loss = _surrogate(r, a, el, eh, dual)
            if beta:
                x = ref[i][t] - logp[i][t]
                loss += beta * {"k1": -x, "k2": x * x / 2, "k3": math.exp(x) - x - 1}[kl]
            if rollout is not None:
                loss *= min(math.exp(old[i][t] - rollout[i][t]), cap)
            per_tok[i][t] = loss
    lens = [sum(mask[i]) for i in range(B)]
    seqs = [i for i in range(B) if lens[i]]
    if agg == "token_mean":
        return sum(map(sum, per_tok)) / sum(lens)
    if agg == "constant":
        return sum(map(sum, per_tok)) / (B * max_tokens)
    if agg == "seq_mean_token_mean" or (agg == "seq_mean" and name == "gspo"):
        return sum(sum(per_tok[i]) / lens[i] for i in seqs) / len(seqs)
    return sum(sum(per_tok[i]) for i in seqs) / len(seqs)  # seq_mean of token sums


def _batch(seed, B=4, T=6, token_adv=False, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    mask[:, 0] = 1
    adv = torch.randn((B, T) if token_adv else (B,), generator=g, dtype=torch.float64)
    return logp, old, adv, mask


@pytest.mark.parametrize("name", sorted(DEFAULTS))
@pytest.mark.parametrize("token_adv", [False, True], ids=["adv_B", "adv_BT"])
def test_matches_loop_oracle(name, token_adv):
    for seed in range(5):
        logp, old, adv, mask = _batch(seed, token_adv=token_adv, spread=0.3 if "gspo" not in name else 3e-4)
        got = policy_loss(name, logp, old, adv, mask, max_tokens=10).loss
        want = oracle(name, logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), max_tokens=10)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
@pytest.mark.parametrize("kl", ["k1", "k2", "k3"])
def test_kl_and_tis_match_oracle(name, kl):
    logp, old, adv, mask = _batch(7, spread=0.2)
    g = torch.Generator().manual_seed(1)
    ref = logp + 0.1 * torch.randn(logp.shape, generator=g, dtype=torch.float64)
    rollout = old + 0.2 * torch.randn(logp.shape, generator=g, dtype=torch.float64)
    got = policy_loss(name, logp, old, adv, mask, max_tokens=9, ref_logp=ref, beta=0.05, kl=kl,
                      rollout_logp=rollout, tis_cap=1.5).loss
    want = oracle(name, logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), max_tokens=9,
                  ref=ref.tolist(), beta=0.05, kl=kl, rollout=rollout.tolist(), cap=1.5)
    assert got.item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean", "constant"])
def test_aggregation_override_matches_oracle(agg):
    logp, old, adv, mask = _batch(3)
    got = policy_loss("grpo", logp, old, adv, mask, agg=agg, max_tokens=7).loss
    want = oracle("grpo", logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), max_tokens=7, agg=agg)
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_defaults_are_the_papers():
    for name, (el, eh, agg, dual) in DEFAULTS.items():
        spec = LOSSES.get(name)
        assert (spec.eps_low, spec.eps_high, spec.agg, spec.dual_clip) == (el, eh, agg, dual), name
        assert aggregation_of(name) == agg


# ---- hand-computed examples ----------------------------------------------------------------
def _one(x):
    return torch.tensor([[x]], dtype=torch.float64)


def test_grpo_hand_computed_clip_active():
    # ratio = e^0.5 = 1.6487 > 1.2, A = +1: min(1.6487 * 1, 1.2 * 1) = 1.2 -> loss -1.2
    out = policy_loss("grpo", _one(0.5), _one(0.0), torch.tensor([1.0], dtype=torch.float64), _one(1))
    assert out.loss.item() == pytest.approx(-1.2)
    assert out.metrics["clip_frac_high"] == 1.0
    # two tokens, one sequence: ratios 1 and e^-1 = 0.3679, A = -2:
    # token 1: -min(1*-2, 1*-2) = 2; token 2: -min(0.3679*-2, 0.8*-2) = -(-1.6) = 1.6; mean 1.8
    out = policy_loss("grpo", torch.tensor([[0.0, -1.0]]), torch.zeros(1, 2), torch.tensor([-2.0]),
                      torch.ones(1, 2))
    assert out.loss.item() == pytest.approx(1.8, rel=1e-6)
    assert out.metrics["clip_frac_low"] == 0.5


def test_dapo_clip_higher_hand_computed():
    # ratio 1.25, A = 1: grpo clips at 1.2 (loss -1.2), dapo's eps_high 0.28 does not (loss -1.25)
    lp, old, a, m = _one(math.log(1.25)), _one(0.0), torch.tensor([1.0], dtype=torch.float64), _one(1)
    assert policy_loss("grpo", lp, old, a, m).loss.item() == pytest.approx(-1.2)
    assert policy_loss("dapo", lp, old, a, m).loss.item() == pytest.approx(-1.25)
    # ratio 1.5: dapo clips at 1.28
    assert policy_loss("dapo", _one(math.log(1.5)), old, a, m).loss.item() == pytest.approx(-1.28)


def test_ppo_dual_clip_hand_computed():
    # ratio e^2 = 7.389, A = -1: clipped surrogate max(7.389, 1.2) = 7.389 > c = 3 -> loss 3
    out = policy_loss("ppo", _one(2.0), _one(0.0), torch.tensor([-1.0], dtype=torch.float64), _one(1))
    assert out.loss.item() == pytest.approx(3.0)
    assert out.metrics["dual_clip_frac"] == 1.0
    # without dual clip (grpo, same surrogate) the loss is the full 7.389
    out = policy_loss("grpo", _one(2.0), _one(0.0), torch.tensor([-1.0], dtype=torch.float64), _one(1))
    assert out.loss.item() == pytest.approx(math.exp(2.0))


def test_dr_grpo_constant_normaliser_hand_computed():
    # on-policy, A = [1, -1], lengths 2 and 1, max_tokens 4: sum = -(1 + 1) - (-1) = -1; / (2*4)
    lp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1, 0], [1, 0, 0]])
    out = policy_loss("dr_grpo", lp, lp, torch.tensor([1.0, -1.0]), mask, max_tokens=4)
    assert out.loss.item() == pytest.approx(-1.0 / 8)


def test_gspo_hand_computed():
    # log-ratios 0.0003 and 0.0001 -> s = e^0.0002 = 1.0002 within [1-3e-4, 1+4e-4]; A = 1:
    lp = torch.tensor([[0.0003, 0.0001]], dtype=torch.float64)
    out = policy_loss("gspo", lp, torch.zeros_like(lp), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2))
    assert out.loss.item() == pytest.approx(-math.exp(0.0002), rel=1e-12)
    # log-ratio 0.01 -> s = 1.01 > 1.0004: clipped to 1.0004
    lp = torch.tensor([[0.01, 0.01]], dtype=torch.float64)
    out = policy_loss("gspo", lp, torch.zeros_like(lp), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2))
    assert out.loss.item() == pytest.approx(-1.0004, rel=1e-12)


# ---- properties ----------------------------------------------------------------------------
shapes = st.tuples(st.integers(1, 4), st.integers(1, 6))


def _rand(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.4).double()
    mask[:, 0] = 1
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return logp, mask, adv


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), name=st.sampled_from(sorted(DEFAULTS)))
def test_on_policy_loss_is_minus_masked_mean_advantage(shape, seed, name):
    logp, mask, adv = _rand(seed, *shape)
    out = policy_loss(name, logp, logp.clone(), adv, mask, max_tokens=8)
    A = adv.unsqueeze(-1).expand_as(mask)
    agg = aggregation_of(name)
    lens = mask.sum(-1)
    if agg == "token_mean":
        want = -(A * mask).sum() / mask.sum()
    elif agg == "constant":
        want = -(A * mask).sum() / (shape[0] * 8)
    elif agg == "seq_mean" and name != "gspo":
        want = -((A * mask).sum(-1)).mean()
    else:
        want = -((A * mask).sum(-1) / lens).mean()
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), name=st.sampled_from(sorted(DEFAULTS)),
       garbage=st.sampled_from([math.nan, math.inf, -math.inf, 1e30]))
def test_masked_tokens_get_exactly_zero_gradient(shape, seed, name, garbage):
    logp, mask, adv = _rand(seed, *shape)
    old = logp + 0.01
    bad = mask == 0
    logp_g = logp.masked_fill(bad, garbage).requires_grad_(True)
    old_g, ref_g, roll_g = (x.masked_fill(bad, garbage) for x in (old, logp - 0.1, old - 0.05))
    adv_t = adv.unsqueeze(-1).expand_as(mask).masked_fill(bad, garbage)
    out = policy_loss(name, logp_g, old_g, adv_t, mask, max_tokens=8, ref_logp=ref_g, beta=0.1,
                      rollout_logp=roll_g, tis_cap=2.0)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert (logp_g.grad[bad] == 0).all()
    assert torch.isfinite(logp_g.grad).all()
    clean = policy_loss(name, logp.clone().requires_grad_(True), old, adv, mask, max_tokens=8,
                        ref_logp=logp - 0.1, beta=0.1, rollout_logp=old - 0.05, tis_cap=2.0)
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
    old = logp + 2e-4 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grads = []
    for name in ("gspo", "gspo_token"):
        lp = logp.clone().requires_grad_(True)
        out = policy_loss(name, lp, old, adv, mask)
        out.loss.backward()
        grads.append((out.loss.item(), lp.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12, abs=1e-15)
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)


def test_kl_penalty_estimators():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    x = ref - lp
    assert torch.allclose(kl_penalty(lp, ref, "k1"), lp - ref)
    assert torch.allclose(kl_penalty(lp, ref, "k2"), (lp - ref) ** 2 / 2)
    assert torch.allclose(kl_penalty(lp, ref, "k3"), torch.exp(x) - x - 1)
    assert (kl_penalty(lp, ref) >= 0).all()


# ---- bad input -----------------------------------------------------------------------------
def test_bad_input_errors_name_the_argument():
    lp = torch.zeros(2, 3)
    with pytest.raises(UnknownNameError, match=r"unknown policy loss 'grpoo'; valid: dapo, dr_grpo, grpo, gspo, gspo_token, ppo"):
        policy_loss("grpoo", lp, lp, torch.zeros(2), lp)
    with pytest.raises(ValueError, match=r"old_logp: shape \(2, 4\) != logp shape \(2, 3\)"):
        policy_loss("grpo", lp, torch.zeros(2, 4), torch.zeros(2), lp)
    with pytest.raises(ValueError, match=r"advantages: shape \(3,\) must be \(B,\)"):
        policy_loss("grpo", lp, lp, torch.zeros(3), lp)
    with pytest.raises(ValueError, match=r"mask: shape"):
        policy_loss("grpo", lp, lp, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"eps_low: must be >= 0, got -0.1"):
        policy_loss("grpo", lp, lp, torch.zeros(2), lp, eps_low=-0.1)
    with pytest.raises(ValueError, match=r"max_tokens: dr_grpo"):
        policy_loss("dr_grpo", lp, lp, torch.zeros(2), lp)
    with pytest.raises(ValueError, match=r"agg: unknown aggregation 'mean'"):
        policy_loss("grpo", lp, lp, torch.zeros(2), lp, agg="mean")
    with pytest.raises(UnknownNameError, match=r"unknown KL estimator 'k4'; valid: k1, k2, k3"):
        kl_penalty(lp, lp, "k4")

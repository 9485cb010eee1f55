"""Policy losses against slow Python-loop oracles, hand-computed examples and bad input."""

import math

import pytest
import torch

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


def oracle(
    name,
    logp,
    old,
    adv,
    mask,
    max_tokens=None,
    ref=None,
    beta=0.0,
    kl="k3",
    rollout=None,
    cap=None,
    agg=None,
):
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
        logp, old, adv, mask = _batch(
            seed, token_adv=token_adv, spread=0.3 if "gspo" not in name else 3e-4
        )
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
    got = policy_loss(
        name,
        logp,
        old,
        adv,
        mask,
        max_tokens=9,
        ref_logp=ref,
        beta=0.05,
        kl=kl,
        rollout_logp=rollout,
        tis_cap=1.5,
    ).loss
    want = oracle(
        name,
        logp.tolist(),
        old.tolist(),
        adv.tolist(),
        mask.tolist(),
        max_tokens=9,
        ref=ref.tolist(),
        beta=0.05,
        kl=kl,
        rollout=rollout.tolist(),
        cap=1.5,
    )
    assert got.item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean", "constant"])
def test_aggregation_override_matches_oracle(agg):
    logp, old, adv, mask = _batch(3)
    got = policy_loss("grpo", logp, old, adv, mask, agg=agg, max_tokens=7).loss
    want = oracle(
        "grpo", logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(), max_tokens=7, agg=agg
    )
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
    out = policy_loss(
        "grpo", _one(0.5), _one(0.0), torch.tensor([1.0], dtype=torch.float64), _one(1)
    )
    assert out.loss.item() == pytest.approx(-1.2)
    assert out.metrics["clip_frac_high"] == 1.0
    # two tokens, one sequence: ratios 1 and e^-1 = 0.3679, A = -2:
    # token 1: -min(1*-2, 1*-2) = 2; token 2: -min(0.3679*-2, 0.8*-2) = -(-1.6) = 1.6; mean 1.8
    out = policy_loss(
        "grpo",
        torch.tensor([[0.0, -1.0]]),
        torch.zeros(1, 2),
        torch.tensor([-2.0]),
        torch.ones(1, 2),
    )
    assert out.loss.item() == pytest.approx(1.8, rel=1e-6)
    assert out.metrics["clip_frac_low"] == 0.5


def test_dapo_clip_higher_hand_computed():
    # ratio 1.25, A = 1: grpo clips at 1.2 (loss -1.2), dapo's eps_high 0.28 does not (loss -1.25)
    lp, old, a, m = (
        _one(math.log(1.25)),
        _one(0.0),
        torch.tensor([1.0], dtype=torch.float64),
        _one(1),
    )
    assert policy_loss("grpo", lp, old, a, m).loss.item() == pytest.approx(-1.2)
    assert policy_loss("dapo", lp, old, a, m).loss.item() == pytest.approx(-1.25)
    # ratio 1.5: dapo clips at 1.28
    assert policy_loss("dapo", _one(math.log(1.5)), old, a, m).loss.item() == pytest.approx(-1.28)


def test_ppo_dual_clip_hand_computed():
    # ratio e^2 = 7.389, A = -1: clipped surrogate max(7.389, 1.2) = 7.389 > c = 3 -> loss 3
    out = policy_loss(
        "ppo", _one(2.0), _one(0.0), torch.tensor([-1.0], dtype=torch.float64), _one(1)
    )
    assert out.loss.item() == pytest.approx(3.0)
    assert out.metrics["dual_clip_frac"] == 1.0
    # without dual clip (grpo, same surrogate) the loss is the full 7.389
    out = policy_loss(
        "grpo", _one(2.0), _one(0.0), torch.tensor([-1.0], dtype=torch.float64), _one(1)
    )
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
    out = policy_loss(
        "gspo", lp, torch.zeros_like(lp), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2)
    )
    assert out.loss.item() == pytest.approx(-math.exp(0.0002), rel=1e-12)
    # log-ratio 0.01 -> s = 1.01 > 1.0004: clipped to 1.0004
    lp = torch.tensor([[0.01, 0.01]], dtype=torch.float64)
    out = policy_loss(
        "gspo", lp, torch.zeros_like(lp), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2)
    )
    assert out.loss.item() == pytest.approx(-1.0004, rel=1e-12)


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
    with pytest.raises(
        UnknownNameError,
        match=r"unknown policy loss 'grpoo'; valid: dapo, dr_grpo, grpo, gspo, gspo_token, ppo",
    ):
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


def test_bad_options_name_the_argument():
    lp, adv = torch.zeros(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match="ref_logp: beta > 0 adds a KL penalty"):
        policy_loss("grpo", lp, lp, adv, lp, beta=0.1)
    with pytest.raises(ValueError, match=r"ref_logp: shape \(2, 2\) != logp shape \(2, 3\)"):
        policy_loss("grpo", lp, lp, adv, lp, beta=0.1, ref_logp=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"rollout_logp: shape \(3, 3\)"):
        policy_loss("grpo", lp, lp, adv, lp, rollout_logp=torch.zeros(3, 3), tis_cap=2.0)
    with pytest.raises(ValueError, match="tis_cap: must be > 0, got 0"):
        policy_loss("grpo", lp, lp, adv, lp, rollout_logp=lp, tis_cap=0.0)
    with pytest.raises(ValueError, match="beta: must be >= 0, got -1"):
        policy_loss("grpo", lp, lp, adv, lp, beta=-1.0, ref_logp=lp)
    with pytest.raises(ValueError, match=r"dual_clip: must be > 1, got 0\.5"):
        policy_loss("ppo", lp, lp, adv, lp, dual_clip=0.5)
    with pytest.raises(ValueError, match=r"logp: expected shape \(B, T\), got \(3,\)"):
        policy_loss("grpo", torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3))


def test_metrics_are_floats_and_hand_checked():
    # two tokens: ratios e^0.5 = 1.65 (A=+1, clipped high) and e^-0.5 = 0.61 (A=-1, clipped low)
    lp = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    ent = torch.tensor([[0.3, 0.5]], dtype=torch.float64)
    out = policy_loss(
        "dapo",
        lp,
        torch.zeros_like(lp),
        adv,
        torch.ones(1, 2),
        entropy=ent,
        ref_logp=lp - 0.1,
        rollout_logp=torch.full_like(lp, 0.1),
        tis_cap=0.95,
    )
    m = out.metrics
    assert all(isinstance(v, float) for v in m.values())
    assert (m["clip_frac_high"], m["clip_frac_low"]) == (0.5, 0.5)
    assert m["ratio_max"] == pytest.approx(math.exp(0.5)) and m["ratio_min"] == pytest.approx(
        math.exp(-0.5)
    )
    assert m["entropy"] == pytest.approx(0.4)
    assert m["kl"] == pytest.approx(math.exp(-0.1) + 0.1 - 1)  # k3 with ref - logp = -0.1
    assert m["tis_weight_mean"] == pytest.approx(math.exp(-0.1))  # e^-0.1 = 0.905 < cap 0.95
    # loss: token 1 -1.28 (clip-higher), token 2 -min(0.61*-1, 0.8*-1) = 0.8; mean; times 0.905
    assert out.loss.item() == pytest.approx(math.exp(-0.1) * (-1.28 + 0.8) / 2)


def test_tis_cap_truncates_the_weight():
    # old - rollout = 1 -> weight e^1 = 2.718 capped at 2; on-policy loss -A = -1 per token
    lp = torch.zeros(1, 2, dtype=torch.float64)
    out = policy_loss(
        "grpo",
        lp,
        lp,
        torch.tensor([1.0], dtype=torch.float64),
        torch.ones(1, 2),
        rollout_logp=lp - 1.0,
        tis_cap=2.0,
    )
    assert out.loss.item() == pytest.approx(-2.0)
    assert out.metrics["tis_weight_mean"] == pytest.approx(2.0)


def test_tis_weight_gets_no_gradient():
    lp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    roll = torch.full((1, 2), -0.3, dtype=torch.float64, requires_grad=True)
    policy_loss(
        "grpo",
        lp,
        lp.detach(),
        torch.tensor([1.0], dtype=torch.float64),
        torch.ones(1, 2),
        rollout_logp=roll,
        tis_cap=5.0,
    ).loss.backward()
    assert roll.grad is None  # detached: autograd never reaches rollout_logp
    # d/dlogp of -(w r A)/2 per token at r = 1: -w/2 with w = e^0.3
    assert lp.grad.flatten().tolist() == pytest.approx([-math.exp(0.3) / 2] * 2)

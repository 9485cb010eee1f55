"""Advantages and filters against loop oracles, hand examples and properties."""

import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.algos import (
    ADVANTAGES,
    FILTERS,
    TurnNode,
    adaptive_k,
    component_stats,
    dynamic_sampling_mask,
    gfpo_advantages,
    gfpo_keep,
    group_advantages,
    mask_truncated,
    overlong_penalty,
    turn_advantages,
    vector_advantages,
)
from agentrl.algos.filters import dynamic_sampling
from agentrl.types import Trajectory, TrajectoryGroup


def oracle_group(rewards, gids, scale="std", eps=1e-6):
    out = []
    for r, g in zip(rewards, gids, strict=True):
        members = [x for x, h in zip(rewards, gids, strict=True) if h == g]
        mean = sum(members) / len(members)
        std = statistics.stdev(members) if len(members) > 1 else 0.0
        out.append(r - mean if scale == "none" else (r - mean) / (std + eps))
    return out


groups = st.lists(
    st.tuples(st.floats(-5, 5, allow_nan=False), st.integers(0, 3)), min_size=1, max_size=16
)


@settings(max_examples=50, deadline=None)
@given(data=groups, scale=st.sampled_from(["std", "none"]))
def test_group_advantages_match_oracle(data, scale):
    r = torch.tensor([x for x, _ in data], dtype=torch.float64)
    g = torch.tensor([h for _, h in data])
    got = group_advantages(r, g, scale=scale)
    want = oracle_group(r.tolist(), g.tolist(), scale)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_group_advantages_hand_computed():
    # group 0: [1, 3], mean 2, unbiased std sqrt(2); group 1: [5] alone -> 0
    got = group_advantages(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 7]), eps=0.0)
    assert got.tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0])
    assert group_advantages(torch.tensor([1.0, 3.0]), ["a", "a"], scale="none").tolist() == [
        -1.0,
        1.0,
    ]


@settings(max_examples=30, deadline=None)
@given(data=groups, seed=st.integers(0, 1000))
def test_permuting_a_batch_permutes_its_advantages(data, seed):
    r = torch.tensor([x for x, _ in data], dtype=torch.float64)
    g = torch.tensor([h for _, h in data])
    perm = torch.randperm(len(r), generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(
        group_advantages(r, g)[perm], group_advantages(r[perm], g[perm]), atol=1e-12
    )


@settings(max_examples=30, deadline=None)
@given(data=groups, w=st.floats(0.1, 3), scale=st.sampled_from(["std", "none"]))
def test_normalize_then_sum_with_one_component_equals_sum_then_normalize_up_to_weight(
    data, w, scale
):
    r = torch.tensor([x for x, _ in data], dtype=torch.float64)
    g = torch.tensor([h for _, h in data])
    a = vector_advantages({"c": r}, {"c": 1.0}, g, mode="normalize_then_sum", scale=scale)
    b = vector_advantages({"c": r}, {"c": 1.0}, g, mode="sum_then_normalize", scale=scale)
    assert torch.allclose(a, b, atol=1e-12)
    if scale == "none":  # both linear in w
        a = vector_advantages({"c": r}, {"c": w}, g, mode="normalize_then_sum", scale=scale)
        b = vector_advantages({"c": r}, {"c": w}, g, mode="sum_then_normalize", scale=scale)
        assert torch.allclose(a, b, atol=1e-9)


def test_vector_advantages_modes_match_oracle_and_loud_component_cannot_drown():
    g = [0, 0, 0, 0]
    solved = [1.0, 0.0, 0.0, 0.0]
    length = [100.0, 300.0, 200.0, 400.0]  # loud raw scale
    comps = {
        "solved": torch.tensor(solved),
        "length": torch.tensor(length),
        "metric": torch.tensor([9.0, 9, 9, 1]),
    }
    w = {"solved": 1.0, "length": -0.01}
    s2n = vector_advantages(comps, w, torch.tensor(g), mode="sum_then_normalize")
    want = oracle_group([a + -0.01 * b for a, b in zip(solved, length, strict=True)], g)
    assert s2n.tolist() == pytest.approx(want, rel=1e-9)
    n2s = vector_advantages(comps, w, torch.tensor(g), mode="normalize_then_sum")
    want = [
        x - 0.01 * y for x, y in zip(oracle_group(solved, g), oracle_group(length, g), strict=True)
    ]
    assert n2s.tolist() == pytest.approx(want, rel=1e-9)
    # the solved trajectory has the top advantage only when components are normalised first
    assert int(n2s.argmax()) == 0


def test_vector_advantages_bad_input():
    with pytest.raises(ValueError, match=r"weights: no component named \['speed'\]"):
        vector_advantages({"a": torch.zeros(2)}, {"speed": 1.0}, torch.zeros(2))
    with pytest.raises(ValueError, match="mode: must be one of"):
        vector_advantages({"a": torch.zeros(2)}, {"a": 1.0}, torch.zeros(2), mode="sum")
    with pytest.raises(ValueError, match=r"components\['b'\]: shape"):
        vector_advantages({"a": torch.zeros(2), "b": torch.zeros(3)}, {"a": 1.0}, torch.zeros(2))
    with pytest.raises(ValueError, match="eps: must be >= 0, got -1"):
        group_advantages(torch.zeros(2), torch.zeros(2), eps=-1)
    with pytest.raises(ValueError, match="scale: must be one of std, none"):
        group_advantages(torch.zeros(2), torch.zeros(2), scale="max")
    with pytest.raises(ValueError, match=r"group_ids: shape \(3,\) != rewards shape \(2,\)"):
        group_advantages(torch.zeros(2), torch.zeros(3))


def test_component_stats_shares_sum_to_one():
    comps = {
        "a": torch.tensor([1.0, 0, 1, 0]),
        "b": torch.tensor([0.0, 5, 1, 2]),
        "m": torch.tensor([1.0, 1, 1, 1]),
    }
    s = component_stats(comps, {"a": 1.0, "b": 0.5}, torch.tensor([0, 0, 1, 1]))
    assert s["adv_share/a"] + s["adv_share/b"] == pytest.approx(1.0) and s["adv_share/m"] == 0.0
    assert s["reward/b_mean"] == pytest.approx(2.0)


# ---- GFPO -----------------------------------------------------------------------------------
def oracle_gfpo_keep(rewards, lengths, gids, k, metric):
    keep = [False] * len(rewards)
    for g in set(gids):
        idx = [i for i, h in enumerate(gids) if h == g]
        key = (
            (lambda i: (lengths[i], i))
            if metric == "length"
            else (lambda i: (-rewards[i] / lengths[i], i))
        )
        for i in sorted(idx, key=key)[:k]:
            keep[i] = True
    return keep


@settings(max_examples=50, deadline=None)
@given(
    G=st.integers(2, 6),
    n_groups=st.integers(1, 3),
    seed=st.integers(0, 1000),
    metric=st.sampled_from(["length", "token_efficiency"]),
    data=st.data(),
)
def test_gfpo_keep_matches_oracle_with_index_tie_breaking(G, n_groups, seed, metric, data):
    k = data.draw(st.integers(1, G))
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (G * n_groups,), generator=g).double()
    lengths = torch.randint(1, 4, (G * n_groups,), generator=g).double()  # many ties
    gids = torch.arange(n_groups).repeat_interleave(G)
    got = gfpo_keep(rewards, lengths, gids, k, metric)
    want = oracle_gfpo_keep(rewards.tolist(), lengths.tolist(), gids.tolist(), k, metric)
    assert got.tolist() == want
    assert int(got.sum()) == k * n_groups
    # advantages: plain group advantages over the kept samples only, 0 for the rest
    adv = gfpo_advantages(rewards, lengths, gids, k, metric)
    kept = [i for i, w in enumerate(want) if w]
    inner = oracle_group([rewards[i].item() for i in kept], [gids[i].item() for i in kept])
    expect = [0.0] * len(want)
    for i, a in zip(kept, inner, strict=True):
        expect[i] = a
    assert adv.tolist() == pytest.approx(expect, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(data=st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=8))
def test_gfpo_with_k_equal_g_is_plain_group_advantages(data):
    r = torch.tensor(data, dtype=torch.float64)
    g = torch.zeros(len(data), dtype=torch.long)
    got = gfpo_advantages(r, torch.arange(1, len(data) + 1).double(), g, k=len(data))
    assert torch.allclose(got, group_advantages(r, g), atol=1e-12)


def test_gfpo_advantages_within_kept_set_hand_computed():
    # keep the 2 shortest of [len 4, 1, 2, 3] -> indices 1, 2 with rewards 0 and 2:
    # mean 1, std sqrt(2) -> -0.7071, +0.7071; others 0
    got = gfpo_advantages(
        torch.tensor([5.0, 0.0, 2.0, 9.0]),
        torch.tensor([4.0, 1, 2, 3]),
        torch.zeros(4),
        k=2,
        eps=0.0,
    )
    assert got.tolist() == pytest.approx([0.0, -1 / math.sqrt(2), 1 / math.sqrt(2), 0.0])


def test_gfpo_bad_k_and_metric():
    with pytest.raises(ValueError, match=r"k: 5 > group size G=4"):
        gfpo_keep(torch.zeros(4), torch.ones(4), torch.zeros(4), k=5)
    with pytest.raises(ValueError, match="k: must be >= 1"):
        gfpo_keep(torch.zeros(4), torch.ones(4), torch.zeros(4), k=0)
    with pytest.raises(ValueError, match="metric: must be one of length, token_efficiency"):
        gfpo_keep(torch.zeros(4), torch.ones(4), torch.zeros(4), k=2, metric="reward")


def test_adaptive_k_gives_hard_groups_more_samples():
    rewards = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0])  # easy, medium, hard
    k = adaptive_k(rewards, torch.arange(3).repeat_interleave(4), k_levels=(1, 2, 3))
    assert k.tolist() == [1] * 4 + [2] * 4 + [3] * 4
    keep = gfpo_keep(rewards, torch.ones(12), torch.arange(3).repeat_interleave(4), k)
    assert keep.view(3, 4).sum(1).tolist() == [1, 2, 3]


# ---- DAPO filters -----------------------------------------------------------------------------
def test_dynamic_sampling_drops_constant_groups():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5])
    keep = dynamic_sampling_mask(r, None, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert keep.tolist() == [False, False, True, True, False, False]


def test_overlong_penalty_hand_computed():
    # L_max 10, cache 4: soft limit 6; L=7 -> (6-7)/4 = -0.25; L=10 -> -1; L=11 -> -1
    got = overlong_penalty(torch.tensor([3, 6, 7, 10, 11]), max_length=10, cache=4)
    assert got.tolist() == [0.0, 0.0, -0.25, -1.0, -1.0]
    with pytest.raises(ValueError, match=r"cache: must be in 1\.\.max_length=10"):
        overlong_penalty(torch.tensor([1]), 10, 0)


def test_mask_truncated_removes_rows():
    m = torch.ones(3, 2)
    assert mask_truncated(m, torch.tensor([False, True, False])).tolist() == [
        [1, 1],
        [0, 0],
        [1, 1],
    ]


# ---- turn-level ---------------------------------------------------------------------------
def test_turn_advantages_hand_computed():
    # root node: children 0 (leaves 0, 1: rewards 1, 0 -> value 0.5) and 1 (leaves 2, 3: 0, 0 -> 0)
    # child advantages with std over [0.5, 0]: mean 0.25, std 0.3536 -> +0.7071, -0.7071
    ep = torch.tensor([0.5, -0.5, 0.0, 0.0], dtype=torch.float64)
    node = TurnNode(
        members=[0, 1, 2, 3], children=[0, 0, 1, 1], rewards=[1.0, 0.0, 0.0, 0.0], start=2
    )
    out = turn_advantages(ep, 5, [node], weight=1.0, eps=0.0)
    assert out[:, :2].tolist() == [[0.5] * 2, [-0.5] * 2, [0.0] * 2, [0.0] * 2]  # shared prefix
    s = 1 / math.sqrt(2)
    assert out[0, 2:].tolist() == pytest.approx([0.5 + s] * 3)
    assert out[3, 2:].tolist() == pytest.approx([-s] * 3)


def test_registries_list_their_entries():
    assert ADVANTAGES.names() == ["dr_grpo", "grpo"]
    assert FILTERS.names() == ["dynamic_sampling", "gfpo"]
    r, g = torch.tensor([1.0, 3.0]), torch.tensor([0, 0])
    assert ADVANTAGES.get("dr_grpo")(r, g).tolist() == [-1.0, 1.0]


def oracle_turn(episode_adv, T, nodes, weight, mode, eps=1e-6):
    """Loop oracle: per node, child values = mean leaf reward, advantages among children."""
    out = [[a] * T for a in episode_adv]
    for node in sorted(nodes, key=lambda nd: nd.start):
        kids = sorted(set(node.children))
        value = {
            c: statistics.mean(
                r for r, k in zip(node.rewards, node.children, strict=True) if k == c
            )
            for c in kids
        }
        adv = dict(
            zip(kids, oracle_group([value[c] for c in kids], [0] * len(kids), eps=eps), strict=True)
        )
        for row, c in zip(node.members, node.children, strict=True):
            for t in range(node.start, T):
                out[row][t] = (out[row][t] if mode == "add" else 0.0) + weight * adv[c]
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["add", "replace"]),
    weight=st.floats(0.1, 2.0),
)
def test_turn_advantages_match_loop_oracle_on_random_trees(seed, mode, weight):
    # a depth-2 tree: root splits 4 leaves into children {0, 1}; child 0 splits again at 3
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (4,), generator=g).double().tolist()
    ep = group_advantages(torch.tensor(rewards), torch.zeros(4)).tolist()
    root = TurnNode(members=[0, 1, 2, 3], children=[0, 0, 1, 1], rewards=rewards, start=1)
    inner = TurnNode(members=[0, 1], children=[5, 7], rewards=rewards[:2], start=3)
    got = turn_advantages(torch.tensor(ep), 6, [inner, root], weight=weight, mode=mode)
    want = oracle_turn(ep, 6, [root, inner], weight, mode)
    assert got.tolist() == [pytest.approx(row, abs=1e-9) for row in want]


def test_turn_advantages_replace_mode_and_bad_input():
    ep = torch.tensor([1.0, -1.0])
    node = TurnNode(members=[0, 1], children=[0, 1], rewards=[1.0, 0.0], start=2)
    s = 1 / math.sqrt(2)  # two children with values 1, 0: mean 0.5, std 0.7071 -> +-0.7071
    out = turn_advantages(ep, 3, [node], weight=2.0, mode="replace", eps=0.0)
    assert out.flatten().tolist() == pytest.approx([1.0, 1.0, 2 * s, -1.0, -1.0, -2 * s])
    with pytest.raises(ValueError, match="mode: must be one of add, replace"):
        turn_advantages(ep, 3, [node], mode="max")
    with pytest.raises(ValueError, match=r"start: 5 outside 0\.\.num_slots=3"):
        turn_advantages(ep, 3, [TurnNode([0, 1], [0, 1], [1.0, 0.0], start=5)])


def _traj(reward, n=3):
    ids = list(range(n))
    return Trajectory(
        prompt_ids=ids[:1],
        token_ids=ids,
        loss_mask=[0] + [1] * (n - 1),
        rollout_logprobs=[0.0] * n,
        reward=reward,
    )


def test_turn_node_from_group():
    group = TrajectoryGroup(
        group_id="g/root",
        level="turn",
        prefix_length=7,
        trajectories=[_traj(1.0), _traj(0.0), _traj(0.5)],
        metadata={"child": [0, 1, 1]},
    )
    node = TurnNode.from_group(group, rows=[4, 5, 6], offset=2)
    assert (list(node.members), list(node.children), list(node.rewards), node.start) == (
        [4, 5, 6],
        [0, 1, 1],
        [1.0, 0.0, 0.5],
        5,
    )
    with pytest.raises(ValueError, match="rows: 2 rows for a group of 3"):
        TurnNode.from_group(group, rows=[0, 1])
    with pytest.raises(ValueError, match="group: level must be 'turn'"):
        TurnNode.from_group(TrajectoryGroup(group_id="e"), rows=[])


def test_dynamic_sampling_on_groups_reports_dropped():
    groups = [
        TrajectoryGroup(group_id=str(i), trajectories=[_traj(a), _traj(b)])
        for i, (a, b) in enumerate([(1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.2, 0.3)])
    ]
    kept, dropped = dynamic_sampling(groups)
    assert [g.group_id for g in kept] == ["1", "3"] and dropped == 2

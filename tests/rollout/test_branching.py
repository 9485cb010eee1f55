"""Branching policies: shapes, shared prefixes, caps that are never exceeded, merging."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrl.rollout import RolloutConfig, RolloutManager, RolloutTask, turn_groups


def _roll(backend, tok, group_size=4, env="test/Echo-v0", **cfg):
    manager = RolloutManager(backend, tok, RolloutConfig(**cfg))
    return asyncio.run(manager.run([RolloutTask(env_id=env, group_size=group_size)]))[0]


def _unique(ids, params):
    return f"say {params.seed % 100003}"


def test_independent_is_g_full_episodes(tiny, scripted):
    backend = scripted(reply=_unique)
    g = _roll(backend, tiny[1], group_size=4, max_turns=3)
    assert len(g) == 4 and g.metadata["generated_turns"] == 12 == len(backend.calls)
    assert all(len(t.turns) == 3 and len(t.branch_points) == 1 for t in g)
    assert {t.branch_points[0] for t in g} == {len(g.trajectories[0].prompt_ids)}  # branch at the prompt


def test_per_turn_grows_as_g_to_the_t(tiny, scripted):
    backend = scripted(reply=_unique)
    g = _roll(backend, tiny[1], group_size=2, max_turns=3, branching="per_turn")
    assert len(g) == 2**3
    assert g.metadata["generated_turns"] == 2 + 4 + 8 == len(backend.calls)


def test_tree_shares_prefixes_generated_once(tiny, scripted):
    backend = scripted(reply=_unique)
    g = _roll(backend, tiny[1], group_size=4, max_turns=3, branching="tree")  # k=2 at turns 0, 1
    assert len(g) == 4
    assert g.metadata["generated_turns"] == 2 + 4 + 4 == len(backend.calls)
    a, b = g.trajectories[0], g.trajectories[1]  # siblings below the same turn-1 node
    assert a.metadata["path"][:1] == b.metadata["path"][:1]
    shared = a.branch_points[1]
    assert a.token_ids[:shared] == b.token_ids[:shared] and a.token_ids[shared:] != b.token_ids[shared:]
    assert a.turns[0] == b.turns[0]  # the shared turn is the same generation
    groups = turn_groups(g)
    assert [tg.metadata["node"] for tg in groups] == [[], [0], [1]]
    assert [len(tg) for tg in groups] == [4, 2, 2]
    assert all(tg.level == "turn" for tg in groups)
    assert groups[1].prefix_length == shared


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    group_size=st.integers(1, 6),
    factor=st.integers(2, 4),
    turns=st.lists(st.integers(0, 3), max_size=4),
    max_leaves=st.none() | st.integers(1, 8),
    max_nodes=st.none() | st.integers(1, 12),
    max_turns=st.integers(1, 4),
    policy=st.sampled_from(["tree", "per_turn", "independent"]),
)
def test_caps_are_never_exceeded(tiny, scripted, group_size, factor, turns, max_leaves, max_nodes,
                                 max_turns, policy):
    backend = scripted(reply=_unique)
    g = _roll(backend, tiny[1], group_size=group_size, max_turns=max_turns, branching=policy,
              branch_factor=factor, branch_turns=turns or None, max_leaves=max_leaves, max_nodes=max_nodes)
    leaf_cap = {"independent": group_size, "tree": max_leaves or group_size,
                "per_turn": max_leaves or group_size**max_turns}[policy]
    assert 1 <= len(g) <= leaf_cap
    assert len(backend.calls) == g.metadata["generated_turns"]
    if max_nodes is not None:
        assert len(backend.calls) <= max_nodes
    assert all(len(t.turns) <= max_turns for t in g)
    assert len({tuple(t.metadata["path"]) for t in g}) == len(g)  # every leaf is a distinct path


def test_identical_states_are_merged(tiny, scripted):
    backend = scripted(reply=lambda ids, p: "50")  # every child guesses the same: same feedback
    g = _roll(backend, tiny[1], group_size=4, env="agentrl/GuessNumber-v0", max_turns=3, branching="tree")
    assert g.metadata["merged"] >= 1
    assert len(g) < 4
    assert sum(t.metadata["multiplicity"] for t in g) == 4  # merged paths are counted, not lost
    off = _roll(scripted(reply=lambda ids, p: "50"), tiny[1], group_size=4, env="agentrl/GuessNumber-v0",
                max_turns=3, branching="tree", merge_identical=False)
    assert len(off) == 4 and off.metadata["merged"] == 0


def test_tree_on_tiny_model_is_token_exact(tiny):
    import torch

    from agentrl.rollout import collect

    model, _ = tiny
    groups = collect("agentrl/GuessNumber-v0", tiny, seeds=[0], group_size=4, branching="tree",
                     max_turns=3, max_new_tokens=8)
    for t in groups[0]:
        ids = torch.tensor([t.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), -1)[0]
        errs = [abs(logp[i - 1, t.token_ids[i]].item() - t.rollout_logprobs[i])
                for i, m in enumerate(t.loss_mask) if m]
        assert max(errs) < 1e-4

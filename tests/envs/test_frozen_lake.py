from __future__ import annotations

import numpy as np
import pytest
from agentrl.envs.frozen_lake import FrozenLake, distances, parse_move, random_lake

import agentrl

LAKE = ["SFH", "FFF", "HFG"]


def _play(env, actions=None):
    total, done, infos = 0.0, False, []
    while not done:
        action = env.scripted_action() if actions is None else actions.pop(0)
        _, r, term, trunc, info = env.step(action)
        total += r
        infos.append(info)
        done = term or trunc
    return total, term, infos


@pytest.mark.parametrize("size", [2, 4, 6])
def test_scripted_policy_reaches_the_maximum_reward(size):
    env = agentrl.make("agentrl/FrozenLake-v0", size=size, max_turns=4 * size)
    for seed in range(15):
        env.reset(seed=seed)
        shortest = env.start_dist
        total, term, infos = _play(env)
        assert term and infos[-1]["reward_components"]["solved"] == 1.0, f"seed {seed}"
        assert env.turn == shortest  # a shortest safe path
        assert total == pytest.approx(1.0 + 0.5 - 0.02 * shortest)


def test_grid_is_text_and_feedback_is_the_new_grid():
    env = FrozenLake(desc=LAKE)
    obs, info = env.reset(seed=0)
    assert "P . H\n. . .\nH . G" in obs and "up, down, left or right" in info["system_prompt"]
    fb, _, term, _, info = env.step("down")
    assert fb.startswith("You moved down to row 2, column 1. The goal is 3 moves away.")
    assert fb.endswith(". . H\nP . .\nH . G") and not term
    assert info["reward_components"]["progress"] == pytest.approx(1 / 4)


def test_bad_actions_get_feedback_not_crashes():
    env = FrozenLake(desc=LAKE, max_turns=8)
    env.reset(seed=0)
    fb, _, term, _, info = env.step("jump!")
    assert "could not find a move" in fb and "P . H" in fb and not term
    assert info["reward_components"]["format"] == pytest.approx(-1 / 8)
    fb, _, _, _, info = env.step("Let me go up.")
    assert "edge of the lake" in fb and "just one word" in fb
    assert info["reward_components"]["format"] == pytest.approx(-0.5 / 8)
    assert info["reward_components"]["progress"] == 0.0
    for _ in range(3):
        fb, *_ = env.step(env.action_space.sample())
        assert isinstance(fb, str) and fb


def test_falling_into_a_hole_ends_the_episode_with_a_penalty():
    env = FrozenLake(desc=LAKE)
    env.reset(seed=0)
    fb, r, term, trunc, info = env.step("right")
    fb, r, term, trunc, info = env.step("right")
    assert "fell in" in fb and term and not trunc
    assert info["reward_components"]["fell"] == 1.0
    assert r == pytest.approx(-0.5 - 0.02)


def test_progress_telescopes_when_walking_away_and_back():
    env = FrozenLake(desc=LAKE)
    env.reset(seed=0)
    _, _, infos = _play(env, ["down", "up", "down", "right", "down", "right"])
    progress = [i["reward_components"]["progress"] for i in infos]
    assert progress == pytest.approx([0.25, -0.25, 0.25, 0.25, 0.25, 0.25])
    assert sum(progress) == pytest.approx(1.0)


def test_parse_move():
    assert parse_move("down") == ("down", 1.0)
    assert parse_move(" Left.\n") == ("left", 1.0)
    assert parse_move("I go up, then RIGHT") == ("right", 0.5)
    assert parse_move("upward downhill") == (None, 0.0)


def test_random_lakes_are_seeded_varied_and_solvable():
    lakes = [tuple(random_lake(np.random.default_rng(s), 5, 7)) for s in range(40)]
    assert lakes[:5] == [tuple(random_lake(np.random.default_rng(s), 5, 7)) for s in range(5)]
    assert len(set(lakes)) > 30
    for lake in lakes:
        assert sum(row.count("H") for row in lake) == 7
        assert (0, 0) in distances(list(lake), (4, 4))
    a, b = FrozenLake(), FrozenLake()
    assert [a.reset(seed=s)[0] for s in range(5)] == [b.reset(seed=s)[0] for s in range(5)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="size must be an integer from 2 to 10"):
        FrozenLake(size=1)
    with pytest.raises(ValueError, match="holes must be an integer from 0 to 5 for size 4"):
        FrozenLake(size=4, holes=6)
    with pytest.raises(ValueError, match=r"desc: unknown cell\(s\) \['X'\]"):
        FrozenLake(desc=["SX", "FG"])
    with pytest.raises(ValueError, match="desc: the goal cannot be reached"):
        FrozenLake(desc=["SH", "HG"])
    with pytest.raises(ValueError, match="exactly one S"):
        FrozenLake(desc=["FF", "FG"])

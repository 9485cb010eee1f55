from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

pytest.importorskip("textarena")

from agentrl.envs.textarena_env import GAMES, TextArena, format_score, hanoi_next_move

import agentrl


def _play(env, actions=None):
    total, done, infos = 0.0, False, []
    while not done:
        action = env.scripted_action() if actions is None else actions.pop(0)
        _, r, term, trunc, info = env.step(action)
        total += r
        infos.append(info)
        done = term or trunc
    return total, term, infos


def test_scripted_policy_reaches_the_maximum_reward_on_tower_of_hanoi():
    env = agentrl.make("agentrl/TextArena-v0")
    obs, _ = env.reset(seed=0)
    assert "Tower of Hanoi with 3 disks" in obs and "A: [3, 2, 1]" in obs
    total, term, infos = _play(env)
    assert term and env.turn == 7  # 2**3 - 1 moves: optimal
    assert (
        infos[-1]["reward_components"]["outcome"] == 1.0 == infos[-1]["reward_components"]["solved"]
    )
    assert total == pytest.approx(1.0 - 0.02 * 7)


def test_scripted_policy_solves_guess_the_number():
    env = agentrl.make("agentrl/TextArena-v0", game="GuessTheNumber-v0")
    for seed in range(6):
        env.reset(seed=seed)
        total, term, infos = _play(env)
        assert term and infos[-1]["reward_components"]["solved"] == 1.0
        assert total == pytest.approx(1.0 - 0.02 * env.turn) and env.turn <= 5  # log2(20)


def test_bad_actions_get_feedback_then_the_game_rules_apply():
    env = TextArena()
    env.reset(seed=0)
    fb, _, term, _, info = env.step("I would move the small disk to C")
    assert "invalid move" in fb and "square brackets" in fb and not term
    assert info["reward_components"]["invalid"] == 1.0
    assert info["reward_components"]["format"] == pytest.approx(-1 / env.max_turns)
    fb, _, term, _, info = env.step("Sure: [C A]")  # moving from an empty tower: 2nd error
    assert term and fb.startswith("Game over: Invalid Move: You tried to move a disk from an empty")
    assert (
        info["reward_components"]["outcome"] == 0.0 and info["reward_components"]["invalid"] == 1.0
    )
    assert info["reward_components"]["format"] == pytest.approx(-0.5 / env.max_turns)


def test_error_allowance_gives_room_for_invalid_moves():
    env = TextArena(error_allowance=3)
    env.reset(seed=0)
    ends = [env.step("move the disk")[2] for _ in range(4)]
    assert ends == [False, False, False, True]
    with pytest.raises(ValueError, match="error_allowance must be a non-negative integer"):
        TextArena(error_allowance=-1)


def test_valid_move_after_an_invalid_one_resets_the_warning():
    env = TextArena()
    env.reset(seed=0)
    env.step("hello")
    fb, _, term, _, info = env.step("[A C]")
    assert "You moved disk 1 from A to C." in fb and "C: [1]" in fb and not term
    assert info["reward_components"]["invalid"] == 0.0


def test_episodes_are_seeded_and_leave_global_random_alone():
    env = TextArena(game="GuessTheNumber-v0")
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    numbers = []
    for seed in (0, 1, 2, 0):
        env.reset(seed=seed)
        env.step("[10]")
        numbers.append(env.game.game_number)
    assert (random.random(), np.random.rand()) == expected
    assert numbers[0] == numbers[3] and len(set(numbers)) > 1


@pytest.mark.parametrize("game", GAMES)
def test_every_allowed_game_runs_offline_and_takes_bad_actions(game):
    env = agentrl.make("agentrl/TextArena-v0", game=game)
    obs, _ = env.reset(seed=0)
    assert obs
    for action in ("hello", env.action_space.sample(), "[0]"):
        fb, _, term, trunc, info = env.step(action)
        assert isinstance(fb, str) and set(info["reward_components"]) <= set(env.reward_weights)
        if term or trunc:
            break


def test_hanoi_next_move_from_any_position():
    assert hanoi_next_move({"A": [3, 2, 1], "B": [], "C": []}) == ("A", "C")
    assert hanoi_next_move({"A": [3], "B": [2, 1], "C": []}) == ("A", "C")
    assert hanoi_next_move({"A": [], "B": [3], "C": [2, 1]}) == ("C", "B")  # 1 onto 3, 2 to A
    assert hanoi_next_move({"A": [], "B": [], "C": [3, 2, 1]}) is None
    for pegs in itertools.product("ABC", repeat=3):  # all 27 legal positions of 3 disks
        towers = {t: [d for d in (3, 2, 1) if pegs[d - 1] == t] for t in "ABC"}
        for _ in range(7):  # 2**3 - 1 moves always suffice
            move = hanoi_next_move(towers)
            if move is None:
                break
            src, dst = move
            assert towers[src] and (not towers[dst] or towers[dst][-1] > towers[src][-1])
            towers[dst].append(towers[src].pop())
        assert towers["C"] == [3, 2, 1], pegs


def test_format_score():
    assert format_score("[A C]") == 1.0
    assert format_score(" [A C] [A B]\n") == 1.0
    assert format_score("I move [A C] now") == 0.5
    assert format_score("A to C") == 0.0


def test_unknown_game_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"game: 'Wordle-v0' is not an allowed .*TowerOfHanoi-v0"):
        TextArena(game="Wordle-v0")
    env = TextArena(game="Sudoku-v0")
    env.reset(seed=0)
    with pytest.raises(NotImplementedError, match="TextArena has no scripted policy"):
        env.scripted_action()

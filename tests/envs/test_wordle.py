from __future__ import annotations

from collections import Counter

import pytest
from agentrl.envs.wordle import WORDS_FILE, Wordle, parse_guess, score_guess, word_list
from hypothesis import given
from hypothesis import strategies as st

import agentrl


def _play(env, actions=None):
    """Play to the end (scripted policy unless actions are given); return total, term, infos."""
    total, done, infos = 0.0, False, []
    while not done:
        action = env.scripted_action() if actions is None else actions.pop(0)
        _, r, term, trunc, info = env.step(action)
        total += r
        infos.append(info)
        done = term or trunc
    return total, term, infos


def test_scripted_policy_reaches_the_maximum_reward():
    env = agentrl.make("agentrl/Wordle-v0")
    for seed in range(12):
        env.reset(seed=seed)
        total, term, infos = _play(env)
        assert term, f"seed {seed}: not solved in {env.max_turns} guesses"
        # max for an n-guess episode: solved 1 + progress 0.5 * 1 + format 0 - 0.02 n
        assert total == pytest.approx(1.5 - 0.02 * env.turn), f"seed {seed}"
        assert sum(i["reward_components"]["progress"] for i in infos) == pytest.approx(1.0)


def test_score_guess_known_cases():
    assert score_guess("crane", "crane") == "GGGGG"
    assert score_guess("crane", "plant") == "--GG-"
    assert score_guess("eerie", "there") == "Y-Y-G"  # one E left after the green one
    assert score_guess("speed", "abide") == "--Y-Y"  # the second E gets nothing
    assert score_guess("llama", "hello") == "YY---"


@given(st.text("abcde", min_size=5, max_size=5), st.text("abcde", min_size=5, max_size=5))
def test_score_guess_marks_each_letter_at_most_as_often_as_it_occurs(guess, target):
    pattern = score_guess(guess, target)
    assert [g == t for g, t in zip(guess, target, strict=True)] == [m == "G" for m in pattern]
    marked = Counter(g for g, m in zip(guess, pattern, strict=True) if m != "-")
    assert marked == Counter(guess) & Counter(target)


def test_parse_guess_is_lenient_but_scored():
    known = frozenset(word_list())
    assert parse_guess("crane") == ("crane", 1.0)
    assert parse_guess("  CRANE.\n") == ("crane", 1.0)
    assert parse_guess("My guess is SLANT, I think", known) == ("slant", 0.5)
    assert parse_guess("apple, not qwxyz", known) == ("apple", 0.5)  # a known word wins
    assert parse_guess("abc qwxyz", known) == ("qwxyz", 0.5)
    assert parse_guess("no idea", known) == (None, 0.0)


def test_feedback_is_letter_by_letter_and_sums_up():
    env = Wordle()
    env.reset(seed=0, options={"word": "plant"})
    fb, _, term, _, info = env.step("crane")
    assert not term
    assert "pattern - - G G -" in fb
    for line in ("C: not in the word", "A: correct, position 3", "N: correct, position 4"):
        assert line in fb
    assert fb.startswith("Guess 1: CRANE") and "Known: _ _ A N _" in fb and "5 guesses left" in fb
    assert info["reward_components"]["progress"] == pytest.approx(0.4)
    fb, *_ = env.step("I pick TALON")
    assert "T: in the word, but not in position 1" in fb and "just the word" in fb
    assert "also in the word: L T" in fb


def test_repeated_letters_feedback():
    env = Wordle()
    env.reset(seed=0, options={"word": "abide"})
    fb, *_ = env.step("speed")
    assert "E: in the word, but not in position 3" in fb and "E: no more Es in the word" in fb


def test_bad_actions_get_feedback_not_crashes():
    env = agentrl.make("agentrl/Wordle-v0", max_turns=5)
    env.reset(seed=3)
    for bad in ("banana", "", "12345"):
        fb, _, term, _, info = env.step(bad)
        assert "could not find a five-letter word" in fb and not term
        assert info["reward_components"]["format"] == pytest.approx(-1 / 5)
        assert info["reward_components"]["progress"] == 0.0
    fb, *_ = env.step("zzzzz")
    assert fb.startswith("Guess 4: ZZZZZ") and "1 guess left" in fb
    fb, _, term, trunc, _ = env.step("zzzzz")
    assert "You already guessed ZZZZZ" in fb and trunc and not term
    assert "No guesses left. The word was" in fb


def test_progress_is_potential_based():
    env = Wordle()
    env.reset(seed=0, options={"word": "plant"})
    _, _, infos = _play(env, ["plane", "crane", "zzzzz", "plant"])
    progress = [i["reward_components"]["progress"] for i in infos]
    assert progress == pytest.approx([0.8, 0.0, 0.0, 0.2])


def test_seeds_are_reproducible_and_varied():
    a, b = Wordle(), Wordle()
    words_a = [a.reset(seed=s) and a.target for s in range(20)]
    assert words_a == [b.reset(seed=s) and b.target for s in range(20)]
    assert len(set(words_a)) > 10


def test_word_list_is_small_and_clean():
    words = word_list()
    assert 1000 <= len(words) == len(set(words))
    assert all(len(w) == 5 and w.isalpha() and w.islower() for w in words)
    assert WORDS_FILE.stat().st_size < 10_000


def test_bad_arguments():
    with pytest.raises(ValueError, match="options\\['word'\\] must be a five-letter word"):
        Wordle().reset(seed=0, options={"word": "toolong"})
    with pytest.raises(ValueError, match="words: need a non-empty list of five-letter words"):
        Wordle(words=["ab"])
    env = Wordle(words=["apple", "mango"])
    env.reset(seed=1)
    assert env.target in {"apple", "mango"}
    assert _play(env)[1]

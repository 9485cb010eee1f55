from __future__ import annotations

import importlib.util
import subprocess
import sys

import gymnasium
import pytest
from agentrl.envs.rgym import ReasoningGym, answer_candidates

import agentrl

needs_rg = pytest.mark.skipif(
    importlib.util.find_spec("reasoning_gym") is None, reason="pip install 'agentrl[reasoning]'"
)

EASY = ["basic_arithmetic", "chain_sum", "letter_counting", "spell_backward", "leg_counting"]


@pytest.fixture(scope="module")
def arith():
    return agentrl.make("agentrl/ReasoningGym-v0", dataset="basic_arithmetic")


@needs_rg
@pytest.mark.parametrize("dataset", EASY)
def test_scripted_policy_reaches_the_maximum_reward(dataset):
    env = agentrl.make("agentrl/ReasoningGym-v0", dataset=dataset, size=200)
    for seed in range(5):
        env.reset(seed=seed)
        _, r, term, _, info = env.step(env.scripted_action())
        assert term and info["reward_components"]["solved"] == 1.0
        assert r == pytest.approx(1.0 - 0.02)  # correct 1 + format 0 - one turn


@needs_rg
def test_gymnasium_make_with_dataset_and_seeds_select_items(arith):
    env = gymnasium.make("agentrl/ReasoningGym-v0", dataset="chain_sum").unwrapped
    q0, _ = env.reset(seed=0)
    assert q0 == env.reset(seed=0)[0] and "<answer></answer>" in q0
    assert len({env.reset(seed=s)[0] for s in range(10)}) == 10
    obs, _ = arith.reset(seed=0, options={"index": 7})
    assert arith.entry["question"] == arith.data[7]["question"] and obs.startswith(
        arith.entry["question"]
    )


@needs_rg
def test_wrong_answer_gets_feedback_and_a_retry(arith):
    arith.reset(seed=1)
    gold = arith.entry["answer"]
    fb, _, term, trunc, info = arith.step("<answer>banana</answer>")
    assert "is not correct (verifier score 0.00 of 1)" in fb and "Try again" in fb
    assert not (term or trunc) and "correct answer was" not in fb
    assert info["reward_components"] == {
        "format": 0.0,
        "turns_used": 1.0,
        "correct": 0.0,
        "solved": 0.0,
    }
    fb, _, term, _, info = arith.step(f"The answer is {gold}.")
    assert fb == "Correct!" and term
    assert info["reward_components"]["format"] == pytest.approx(-0.5 / 3)  # untagged: half credit
    assert info["reward_components"]["correct"] == 1.0


@needs_rg
def test_last_attempt_reveals_the_answer_and_truncates():
    env = agentrl.make("agentrl/ReasoningGym-v0", max_turns=2)
    env.reset(seed=2)
    fb, *_ = env.step("")
    assert "Your reply is empty" in fb
    fb, _, term, trunc, info = env.step("I don't know")
    assert trunc and not term and f"The correct answer was: {env.entry['answer']}" in fb
    assert info["reward_components"]["format"] == pytest.approx(-0.5 / 2)


@needs_rg
def test_single_turn_mode():
    env = agentrl.make("agentrl/ReasoningGym-v0", dataset="chain_sum", max_turns=1)
    env.reset(seed=0)
    _, _, term, trunc, _ = env.step("<answer>-1</answer>")
    assert trunc and not term


@needs_rg
def test_partial_scores_count_once():
    env = agentrl.make("agentrl/ReasoningGym-v0", dataset="spell_backward", max_turns=4)
    env.reset(seed=0)
    gold = env.entry["answer"]
    padded = f"<answer>{gold}xx</answer>"  # reasoning-gym gives partial credit for near misses
    partial = env.verify(padded[8:-9])
    assert 0.0 < partial < 1.0
    steps = [env.step(a)[4]["reward_components"]["correct"] for a in (padded, padded)]
    steps.append(env.step(env.scripted_action())[4]["reward_components"]["correct"])
    assert steps == pytest.approx([partial, 0.0, 1.0 - partial])


def test_answer_candidates():
    assert answer_candidates("blah <answer> 42 </answer>") == (["42"], 1.0)
    assert answer_candidates("So the answer is **17**.\nDone") == (
        ["So the answer is **17**.\nDone", "17", "Done"],
        0.5,
    )
    assert answer_candidates("3 + 4 = 7") == (["3 + 4 = 7", "7"], 0.5)
    assert answer_candidates("   ") == ([], 0.0)


@needs_rg
def test_bad_arguments():
    with pytest.raises(
        ValueError, match=r"dataset: unknown reasoning-gym dataset 'nope'; valid: .*chain_sum"
    ):
        ReasoningGym(dataset="nope")
    with pytest.raises(ValueError, match="config: reasoning-gym rejected 'basic_arithmetic'"):
        ReasoningGym(config={"bogus": 1})
    with pytest.raises(ValueError, match="size must be a positive integer"):
        ReasoningGym(size=0)
    env = ReasoningGym(size=10)
    with pytest.raises(ValueError, match=r"options\['index'\] must be an integer in \[0, 10\)"):
        env.reset(seed=0, options={"index": 10})


_WITHOUT_PACKAGES = """
import importlib.util
real = importlib.util.find_spec
hidden = ("reasoning_gym", "textarena")
importlib.util.find_spec = lambda name, *a: None if name in hidden else real(name, *a)
import agentrl
from agentrl.envs.rgym import ReasoningGym
from agentrl.envs.textarena_env import TextArena
print(sorted(set(agentrl.env_ids()) & {"agentrl/ReasoningGym-v0", "agentrl/TextArena-v0"}))
for cls in (ReasoningGym, TextArena):
    try:
        cls()
    except ImportError as e:
        print(e)
"""


def test_adapters_without_their_packages_are_not_registered_and_say_how_to_install():
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PACKAGES],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "[]",
        "ReasoningGym needs the reasoning-gym package: pip install 'agentrl[reasoning]'  "
        "(or: pip install reasoning-gym)",
        "TextArena needs the textarena package: pip install 'agentrl[textarena]'  "
        "(or: pip install textarena)",
    ]

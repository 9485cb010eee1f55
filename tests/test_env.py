import gymnasium
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import agentrl
from agentrl.env import StepResult, TextEnv, env_ids, register_env


@pytest.mark.parametrize("env_id", env_ids())
def test_check_env_passes(env_id):
    env = gymnasium.make(env_id).unwrapped
    check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id", env_ids())
def test_reward_is_weighted_sum_of_components(env_id):
    env = agentrl.make(env_id)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert isinstance(obs, str) and obs
        done = False
        actions = iter(["50", "I think 7", "hello", "", "3", "99", "1"] * 5)
        while not done:
            _, reward, term, trunc, info = env.step(next(actions))
            comps = info["reward_components"]
            assert set(comps) <= set(env.reward_weights)
            assert reward == pytest.approx(sum(env.reward_weights[k] * v for k, v in comps.items()), abs=1e-12)
            done = term or trunc


def test_gymnasium_make_and_reset_matches_issue_example():
    env = gymnasium.make("agentrl/GuessNumber-v0")
    obs, info = env.reset(seed=0)
    assert "integer between 1 and 100" in obs and "system_prompt" in info


def test_seeding_is_reproducible():
    a, b = agentrl.make("agentrl/GuessNumber-v0"), agentrl.make("agentrl/GuessNumber-v0")
    targets_a = [a.reset(seed=s) and a.target for s in range(10)]
    targets_b = [b.reset(seed=s) and b.target for s in range(10)]
    assert targets_a == targets_b and len(set(targets_a)) > 1


def test_guess_number_feedback_and_scripted_policy_solves():
    env = agentrl.make("agentrl/GuessNumber-v0")
    for seed in range(20):
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, info = env.step(env.scripted_action())
            total += r
            done = term or trunc
        assert term, f"binary search must solve within {env.max_turns} turns (seed {seed})"
        assert info["reward_components"]["solved"] == 1.0
        assert total == pytest.approx(1.0 - 0.02 * env.turn)  # max reward for that path


def test_guess_number_feedback_explains():
    env = agentrl.make("agentrl/GuessNumber-v0")
    env.reset(seed=0)
    target = env.target
    fb, *_ = env.step("banana")
    assert "could not find an integer" in fb
    low = max(1, target - 1) if target > 1 else None
    if low is not None and low != target:
        fb, _, _, _, info = env.step(f"Maybe {low}?")
        assert "too low" in fb and "just the number" in fb
        assert info["reward_components"]["format"] == pytest.approx(-0.5 / env.max_turns)
    fb, *_ = env.step("1000")
    assert "outside the range" in fb


def test_step_before_reset_and_after_done_raise():
    env = agentrl.make("agentrl/GuessNumber-v0")
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step("50")
    env.reset(seed=1)
    env.step(str(env.target))
    with pytest.raises(ResetNeeded, match="after the episode ended"):
        env.step("50")


def test_non_string_action_raises():
    env = agentrl.make("agentrl/GuessNumber-v0")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action must be a str, got int"):
        env.step(50)


def test_unknown_env_id_lists_registered():
    with pytest.raises(gymnasium.error.UnregisteredEnv, match="GuessNumber"):
        agentrl.make("agentrl/Nope-v0")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="max_turns"):
        agentrl.make("agentrl/GuessNumber-v0", max_turns=0)
    with pytest.raises(ValueError, match=r"reward_weights: unknown component\(s\) \['speed'\]"):
        agentrl.make("agentrl/GuessNumber-v0", reward_weights={"speed": 1.0})
    with pytest.raises(ValueError, match="low < high"):
        agentrl.make("agentrl/GuessNumber-v0", low=5, high=5)


def test_reward_weights_override_changes_reward():
    env = agentrl.make("agentrl/GuessNumber-v0", reward_weights={"solved": 2.0})
    env.reset(seed=0)
    _, r, *_ = env.step(str(env.target))
    assert r == pytest.approx(2.0 - 0.02)


class _Echo(TextEnv):
    reward_weights = {"correct": 1.0}

    def _reset_task(self, options):
        self.word = str(self.np_random.choice(["apple", "pear"]))
        return f"Repeat {self.word}"

    def _score(self, action):
        ok = action.strip() == self.word
        return StepResult("yes" if ok else "no", {"correct": float(ok)}, ok)


def test_custom_env_registration_and_undeclared_component():
    env_id = register_env("EchoTest", f"{__name__}:_Echo", components=_Echo.reward_weights)
    assert env_id == "agentrl/EchoTest-v0" and env_id in env_ids()
    env = gymnasium.make(env_id).unwrapped
    env.reset(seed=0)
    assert env.step(env.word)[1] == 1.0

    class Bad(_Echo):
        def _score(self, action):
            return StepResult("x", {"secret": 1.0})

    bad = Bad()
    bad.reset(seed=0)
    with pytest.raises(RuntimeError, match="undeclared reward component"):
        bad.step("x")


def test_plugin_entry_points_are_loaded(monkeypatch):
    import agentrl.env as env_mod

    calls = []

    class EP:
        name = "demo-plugin"

        def load(self):
            return lambda: calls.append(register_env("PluginEnv", f"{__name__}:_Echo"))

    class Broken:
        name = "broken"

        def load(self):
            raise ImportError("no such module")

    monkeypatch.setattr(env_mod.importlib_metadata, "entry_points", lambda group: [EP(), Broken()])
    with pytest.warns(UserWarning, match="'broken' failed to load: no such module"):
        assert env_mod.load_plugin_envs() == ["demo-plugin"]
    assert calls == ["agentrl/PluginEnv-v0"] and "agentrl/PluginEnv-v0" in gymnasium.registry

from __future__ import annotations

import numpy as np
import pytest
from agentrl.envs.arithmetic import TEMPLATES, Arithmetic, generate_problem, parse_answer

import agentrl
from agentrl.rollout.tokens import prompt_messages
from agentrl.tool import call_tool
from agentrl.toolcall import format_tool_call, parse_tool_calls


def _play(env, actions=None):
    total, done, infos = 0.0, False, []
    while not done:
        action = env.scripted_action() if actions is None else actions.pop(0)
        _, r, term, trunc, info = env.step(action)
        assert r == pytest.approx(sum(env.reward_weights[k] * v for k, v in info["reward_components"].items()))
        total += r
        infos.append(info)
        done = term or trunc
    return total, term, infos


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_scripted_policy_reaches_the_maximum_reward(difficulty):
    env = agentrl.make("agentrl/Arithmetic-v0", difficulty=difficulty)
    for seed in range(12):
        env.reset(seed=seed)
        total, term, infos = _play(env)
        assert term and total == pytest.approx(1.0), f"seed {seed}"
        assert infos[-1]["reward_components"]["correct"] == 1.0
        assert sum(i["reward_components"]["tool_calls"] for i in infos) == len(env.problem.steps)


def test_problems_are_seeded_varied_and_solvable_by_their_steps():
    a, b = Arithmetic(), Arithmetic()
    assert [a.reset(seed=s)[0] for s in range(5)] == [b.reset(seed=s)[0] for s in range(5)]
    seen = set()
    for seed in range(200):
        p = generate_problem(np.random.default_rng(seed), 2)
        seen.add(p.text.split()[1])
        assert p.steps[-1][1] == p.answer
        for expression, value in p.steps:
            assert call_tool("calculator", {"expression": expression}).output == str(value)
    assert len({generate_problem(np.random.default_rng(s)).text for s in range(50)}) == 50
    assert len(TEMPLATES) == 8


def test_parse_answer_formats():
    assert parse_answer("Answer: 1,234") == (1234.0, 1.0)
    assert parse_answer("so the answer: -7.5 dollars") == (-7.5, 1.0)
    assert parse_answer("I think it is 12 or 15") == (15.0, 0.25)
    assert parse_answer("no idea") == (None, 0.0)


def test_bad_actions_get_feedback_not_crashes():
    env = Arithmetic(max_turns=6)
    env.reset(seed=0)
    answer = env.problem.answer
    obs, r, term, _, info = env.step("I am not sure.")
    assert "could not find a number" in obs and not term
    assert info["reward_components"]["format"] == pytest.approx(-1 / 6) and r == pytest.approx(0.5 * -1 / 6)
    obs, _, term, _, info = env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "2 ^ 3"}}</tool_call>')
    assert "Error: '^' is not a power here" in info["feedback_messages"][0]["content"] and not term
    assert info["reward_components"]["tool_error"] == 1.0
    obs, _, _, _, info = env.step('<tool_call>{"name": "calculator", "arguments": {"expression": 12}}</tool_call>')
    assert "argument 'expression': Input should be a valid string" in obs
    obs, _, _, _, info = env.step("<tool_call>calculator(2+2)</tool_call>")
    assert "invalid JSON" in obs and info["reward_components"]["format"] == pytest.approx(-1 / 6)
    obs, r, term, _, info = env.step(f"Answer: {answer + 1}")
    assert term and obs.startswith(f"Incorrect: you answered {answer + 1}, but the answer is {answer} (")
    assert env.problem.steps[0][0] in obs and "Use the calculator tool" in obs
    assert info["reward_components"]["correct"] == 0.0


def test_format_partial_credit_is_ordered():
    """Tagged call + Answer > bare JSON call > Answer without a call > a number in prose."""

    def episode(actions):
        env = Arithmetic(max_turns=6)
        env.reset(seed=4)
        step = format_tool_call("calculator", {"expression": env.problem.steps[0][0]})
        script = [a.replace("STEP", step).replace("JSON", step.split("\n")[1])
                  .replace("ANSWER", str(env.problem.answer)) for a in actions]
        return _play(env, script)[0]

    tagged = episode(["STEP", "Answer: ANSWER"])
    bare = episode(["JSON", "Answer: ANSWER"])
    no_call = episode(["Answer: ANSWER"])
    prose = episode(["It is ANSWER."])
    assert tagged == pytest.approx(1.0)
    assert tagged > bare > no_call > prose > 0.9
    assert no_call == pytest.approx(1.0 + 0.5 * (0.4 - 1) / 6)


def test_prompt_for_a_template_without_tool_support(tiny):
    _, tok = tiny
    env = agentrl.make("agentrl/Arithmetic-v0")
    obs, info = env.reset(seed=1)
    messages, template_tools = prompt_messages(obs, info, tok)
    assert template_tools is None and messages[0]["role"] == "system"
    system = messages[0]["content"]
    assert system.startswith("You solve arithmetic word problems.") and "<tools>" in system
    assert '"name": "calculator"' in system and "Answer: 42" in system
    example = system.split("For example:\n")[1].split("\n\n")[0]
    assert parse_tool_calls(example).calls[0].name == "calculator"


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="difficulty must be 1, 2 or 3, got 5"):
        Arithmetic(difficulty=5)
    with pytest.raises(ValueError, match=r"reward_weights: unknown component\(s\) \['tests'\]"):
        Arithmetic(reward_weights={"tests": 1.0})

from __future__ import annotations

import pytest
from agentrl.envs.code_fix import CodeFix, check_code, extract_code, load_tasks

import agentrl

TASKS = load_tasks()
SAMPLE = ["sum_evens", "average", "add_item", "parse_positive"]  # int, float, shared state, raises


def _fix(code: str) -> str:
    return f"Here is the fix:\n```python\n{code}```\nDone."


def _assert_weighted(env, r, info):
    assert r == pytest.approx(sum(env.reward_weights[k] * v for k, v in info["reward_components"].items()))


def test_task_data_is_valid():
    assert len(TASKS) >= 30
    ids = [t.id for t in TASKS]
    assert len(set(ids)) == len(ids)
    for t in TASKS:
        assert check_code(t.buggy, t.function) is None and check_code(t.fixed, t.function) is None
        assert any(not c.hidden for c in t.tests) and any(c.hidden for c in t.tests)


def _check_task(task_id: str) -> None:
    env = CodeFix(tasks=[task_id], max_turns=2)
    env.reset(seed=0)
    obs, _, term, _, info = env.step(_fix(env.task.buggy))
    assert not term and info["fraction_passed"] < 1.0, f"{task_id}: the buggy version passes"
    assert "Failed: " in obs, f"{task_id}: no shown test fails for the buggy version"
    _, _r, term, _, info = env.step(env.scripted_action())
    assert term and info["fraction_passed"] == 1.0, f"{task_id}: the reference fix fails"


@pytest.mark.parametrize("task_id", SAMPLE)
def test_fix_passes_and_bug_fails_on_a_sample(task_id):
    _check_task(task_id)


@pytest.mark.slow
def test_every_fix_passes_and_every_bug_fails():
    for t in TASKS:
        _check_task(t.id)


def test_scripted_policy_reaches_the_maximum_reward():
    env = agentrl.make("agentrl/CodeFix-v0")
    best = sum(env.reward_weights.values())  # tests_passed 1, all_passed 1, syntax_ok 1
    for seed in range(3):
        env.reset(seed=seed)
        _, r, term, trunc, info = env.step(env.scripted_action())
        assert term and not trunc and r == pytest.approx(best) == 1.6
        assert info["reward_components"] == {"tests_passed": 1.0, "all_passed": 1.0, "syntax_ok": 1.0}


def test_episode_reward_telescopes_to_the_last_submission():
    env = CodeFix(tasks=["sum_evens"], max_turns=4)
    env.reset(seed=0)
    total = 0.0
    for action, fraction in [("def sum_evens(nums) return 0", 0.0),
                             (_fix("def sum_evens(nums):\n    return sum(nums)\n"), 0.4),
                             (_fix("def sum_evens(nums):\n    return 0\n"), 0.4),
                             ("def nope(): pass", 0.0)]:
        _obs, r, term, trunc, info = env.step(action)
        _assert_weighted(env, r, info)
        assert info["fraction_passed"] == pytest.approx(fraction)
        total += r
    assert trunc and not term
    assert total == pytest.approx(0.0)  # the last submission does not parse: back to zero
    env.reset(seed=0)
    r1 = env.step(_fix("def sum_evens(nums):\n    return sum(nums)\n"))[1]
    r2 = env.step(env.scripted_action())[1]
    assert r1 + r2 == pytest.approx(1.6)


def test_feedback_shows_failing_tests_and_counts_hidden_ones():
    env = CodeFix(tasks=["sum_evens"])
    env.reset(seed=0)
    obs, _, _, _, info = env.step(_fix("def sum_evens(nums):\n    print('debug')\n    return sum(nums)\n"))
    assert obs.startswith("2 of 5 tests passed.")
    assert "Failed: sum_evens([1, 2, 3, 4]) returned 10; expected 6." in obs
    assert "Your code printed:\ndebug" in obs and "hidden" not in obs
    assert info["reward_components"] == {"tests_passed": pytest.approx(0.4), "all_passed": 0.0, "syntax_ok": 1.0}
    obs, _, _, _, info = env.step(_fix("def sum_evens(nums):\n    return sum(n for n in nums if n % 2 == 0 and n < 10)\n"))
    assert obs == "4 of 5 tests passed.\n1 hidden test(s) failed."  # the hidden call is never shown
    assert info["reward_components"] == {"tests_passed": pytest.approx(0.4), "all_passed": 0.0, "syntax_ok": 0.0}


@pytest.mark.parametrize(("code", "message"), [
    ("def sum_evens(nums) return 0", "Your code does not parse: SyntaxError: expected ':' (line 1)"),
    ("print('hi')", "Your code does not define a function named sum_evens."),
    ("x" * 20001, "Your code is too long (20001 characters; limit 20000)."),
    ("def sum_evens(nums):\n    return nums[99]\n", "raised IndexError: list index out of range; expected 6."),
    ("import missing_module\ndef sum_evens(nums):\n    pass\n",
     "Your code raised an error when it was loaded: ModuleNotFoundError: No module named 'missing_module'"),
    ("def sum_evens(nums):\n    while not nums:\n        pass\n    return 6\n",
     "Failed: sum_evens([]) raised Timeout: the call took longer than 1 s; expected 0."),
    ("import os\nos._exit(0)\ndef sum_evens(nums):\n    pass\n",
     "The tests did not run: the process exited with status 0 while loading your code."),
    ("def sum_evens(nums):\n    return {6}\n", "returned a value of type set (expected plain data); expected 6."),
])
def test_bad_submissions_get_feedback_not_crashes(code, message):
    env = CodeFix(tasks=["sum_evens"])
    env.reset(seed=0)
    obs, r, term, _, info = env.step(code)
    assert message in obs and not term
    _assert_weighted(env, r, info)


def test_reward_hacks_get_no_credit():
    env = CodeFix(tasks=["sum_evens"], max_turns=3)
    env.reset(seed=0)
    always_equal = ("class Anything(int):\n    def __eq__(self, other):\n        return True\n"
                    "def sum_evens(nums):\n    return Anything(0)\n")
    _, _, _, _, info = env.step(_fix(always_equal))
    assert info["passed"] == 0  # int subclasses are not plain ints
    forge = ("import re\nnonce = re.search(r'NONCE = \"(\\w+)\"', open('main.py').read()).group(1)\n"
             "print(nonce + '{\"loaded\": true}')\n"
             "for i, v in enumerate([6, 0, 0, 6, 10]):\n    print(nonce + '{\"i\": %d, \"value\": %d}' % (i, v))\n"
             "def sum_evens(nums):\n    return -1\n")
    _, _, term, _, info = env.step(_fix(forge))
    assert not term and info["passed"] == 0  # the harness's own reports come last and win


def test_tasks_options_and_errors(tmp_path):
    env = CodeFix(tasks=["gcd", "fib"])
    assert {env.reset(seed=s)[0].split("def ")[1].split("(")[0] for s in range(20)} == {"gcd", "fib"}
    obs, _ = env.reset(options={"task": "fib"})
    assert "def fib(n):" in obs and "fib(0) == 0" in obs
    with pytest.raises(ValueError, match=r"options\['task'\]: unknown task 'nope'; valid: gcd, fib"):
        env.reset(options={"task": "nope"})
    with pytest.raises(ValueError, match=r"tasks: unknown task id\(s\) \['nope'\]"):
        CodeFix(tasks=["nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: x, function: f, description: d, buggy: b, fixed: f, tests: [{args: [], hidden: true}]}\n")
    with pytest.raises(ValueError, match=r"(?s)bad\.yaml: task 0 \(x\):.*needs at least one test that is not hidden"):
        load_tasks(bad)


def test_extract_code():
    assert extract_code("a\n```python\nx = 1\n```\nb\n```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("```\nz = 3\n") == "z = 3\n"  # an unclosed fence at the end
    assert extract_code("def f(): pass") == "def f(): pass"

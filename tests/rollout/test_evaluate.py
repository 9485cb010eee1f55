"""``agentrl.evaluate`` on the rollout engine."""

from __future__ import annotations

import io

from rich.console import Console

from agentrl.evaluate import evaluate, print_report


def test_evaluate_runs_every_seed_to_the_end_and_prints():
    console = Console(file=io.StringIO(), width=120)
    report = evaluate("agentrl/GuessNumber-v0", "tiny-random", seeds=[3, 1], max_new_tokens=4, console=console)
    assert [e.seed for e in report.episodes] == [3, 1]
    for ep in report.episodes:
        assert ep.messages[0]["role"] == "system" and ep.messages[-1]["role"] == "user"
        assert sum(m["role"] == "assistant" for m in ep.messages) == 7  # the env's own turn limit
        assert set(ep.components) == {"solved", "format", "turns_used", "ignored_feedback"}
    print_report(report, console)
    out = console.file.getvalue()
    assert "success rate" in out and "component: format" in out

import math

import pytest
from pydantic import ValidationError

from agentrl.types import (
    Message,
    RewardVector,
    ToolCall,
    Trajectory,
    TrajectoryGroup,
    Turn,
    dump_jsonl,
    load_jsonl,
)


def make_traj(**kw) -> Trajectory:
    base = dict(
        env_id="agentrl/GuessNumber-v0",
        seed=3,
        group_id="g0",
        prompt_ids=[1, 2, 3],
        token_ids=[1, 2, 3, 10, 11, 2, 7, 8],
        loss_mask=[0, 0, 0, 1, 1, 1, 0, 0],
        rollout_logprobs=[0.0, 0.0, 0.0, -0.1234567890123, -1e-9, -3.5, 0.0, 0.0],
        messages=[Message(role="user", content="guess"),
                  Message(role="assistant", content="", tool_calls=[ToolCall(name="calculator", arguments={"expression": "1+2"})])],
        turns=[Turn(action="50", token_ids=[10, 11, 2], logprobs=[-0.1234567890123, -1e-9, -3.5],
                    feedback="higher", reward_components={"solved": 0.0, "format": 1.0}, reward=0.1)],
        reward_components={"solved": 0.0, "format": 1.0},
        reward_weights={"solved": 1.0, "format": 0.1},
        reward=0.1,
    )
    base.update(kw)
    return Trajectory(**base)


def test_jsonl_round_trip_is_lossless(tmp_path):
    group = TrajectoryGroup(group_id="g0", trajectories=[make_traj(), make_traj(seed=4, reward=0.3 + 1e-15)])
    path = tmp_path / "groups.jsonl"
    assert dump_jsonl([group, group], path) == 2
    back = load_jsonl(path, TrajectoryGroup)
    assert back == [group, group]
    assert back[0].trajectories[0].rollout_logprobs[3] == -0.1234567890123


def test_reward_vector_scalarizes_with_weights():
    rv = RewardVector(components={"a": 1.0, "b": 2.0, "metric": 5.0}, weights={"a": 0.5, "b": -1.0})
    assert rv.scalar() == pytest.approx(0.5 - 2.0)  # 'metric' has no weight: a metric only
    assert rv.scalar({"metric": 1.0}) == 5.0
    assert make_traj().reward_vector.scalar() == pytest.approx(0.1)


def test_reward_vector_rejects_nan():
    with pytest.raises(ValidationError, match="components"):
        RewardVector(components={"a": math.nan})


def test_trajectory_lengths_must_align():
    with pytest.raises(ValidationError, match="must match token_ids"):
        make_traj(loss_mask=[0, 1])
    with pytest.raises(ValidationError, match="start with prompt_ids"):
        make_traj(prompt_ids=[9])
    with pytest.raises(ValidationError, match="loss_mask: values must be 0 or 1"):
        make_traj(loss_mask=[0, 0, 0, 1, 1, 2, 0, 0])


def test_failed_trajectory_needs_error_text():
    with pytest.raises(ValidationError, match="must say why"):
        make_traj(status="failed")
    assert make_traj(status="failed", error="env raised ValueError").error


def test_turn_logprobs_align_and_message_roles():
    with pytest.raises(ValidationError, match="logprobs"):
        Turn(action="x", token_ids=[1, 2], logprobs=[0.0])
    with pytest.raises(ValidationError, match="tool_calls"):
        Message(role="user", content="x", tool_calls=[ToolCall(name="f")])
    with pytest.raises(ValidationError):
        Message(role="robot", content="x")
    assert Message(role="assistant", content="", tool_calls=[ToolCall(name="f", arguments={"x": 1})]).to_template()["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}

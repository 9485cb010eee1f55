import pytest

from agentrl.train.config import TrainConfig, apply_overrides, load_config


def test_example_config_loads_and_overrides(tmp_path):
    cfg = load_config("examples/guess_number.yaml", ["algo.name=dapo", "train.steps=3", "env.kwargs.high=20"])
    assert cfg.algo.name == "dapo" and cfg.train.steps == 3 and cfg.env.kwargs["high"] == 20
    assert isinstance(cfg, TrainConfig)


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match=r"train\.stepz: Extra inputs are not permitted"):
        load_config(None, ["train.stepz=3"])


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match=r"algo\.name: unknown loss 'ppo2'; valid: .*grpo"):
        load_config(None, ["algo.name=ppo2"])


def test_gspo_with_token_level_clip_range_is_rejected():
    with pytest.raises(ValueError, match=r"algo\.eps_high=0\.2: GSPO"):
        load_config(None, ["algo.name=gspo", "algo.eps_high=0.2"])
    assert load_config(None, ["algo.name=gspo", "algo.eps_high=4e-4"]).algo.eps_high == 4e-4


def test_gfpo_k_must_be_smaller_than_group():
    with pytest.raises(ValueError, match=r"filters\.gfpo_k=8 must be < rollout\.group_size=8"):
        load_config(None, ["filters.gfpo_k=8", "rollout.group_size=8"])


def test_reward_weight_for_missing_component_is_rejected():
    with pytest.raises(ValueError, match=r"env\.reward_weights: agentrl/GuessNumber-v0 has no component\(s\) \['speed'\]"):
        load_config(None, ["env.reward_weights={speed: 1.0}"])


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match=r"rollout\.group_size: Input should be greater than or equal to 1"):
        load_config(None, ["rollout.group_size=0"])
    with pytest.raises(ValueError, match=r"must look like section\.field=value"):
        apply_overrides({}, ["algo.name"])


def test_async_needs_staleness_of_at_least_one():
    with pytest.raises(ValueError, match=r"train\.max_staleness=0 contradicts train\.mode=async"):
        load_config(None, ["train.mode=async", "train.max_staleness=0"])

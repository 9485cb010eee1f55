"""The command line: catalog listing, config errors, and the demo's plumbing on the tiny model."""

import json

from typer.testing import CliRunner

from agentrl.cli import app

runner = CliRunner()


def test_envs_lists_catalog_as_json():
    result = runner.invoke(app, ["envs", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.output)}
    assert "agentrl/GuessNumber-v0" in rows
    assert set(rows["agentrl/GuessNumber-v0"]["components"]) >= {"solved", "format"}


def test_train_with_bad_override_exits_2_naming_the_field():
    result = runner.invoke(app, ["train", "examples/guess_number.yaml", "--set", "filters.gfpo_k=9"])
    assert result.exit_code == 2
    assert "filters.gfpo_k=9 must be < rollout.group_size=8" in result.output


def test_demo_pipeline_runs_on_tiny_model(tmp_path):
    result = runner.invoke(app, [
        "demo", "--set", "model=tiny-random", "--set", f"out_dir={tmp_path}", "--set", "train.steps=2",
        "--set", "sft.episodes=4", "--set", "sft.batch_size=2", "--set", "env.eval_seeds=[0,1]",
        "--set", "rollout.tasks_per_step=1", "--set", "rollout.group_size=2", "--set", "train.train_layers=1",
    ])
    assert result.exit_code == 0, result.output
    for stage in ("before", "after SFT", "after RL", "success_rate", "after training: held-out episode"):
        assert stage in result.output
    assert (tmp_path / "metrics.png").is_file() and (tmp_path / "checkpoints").is_dir()

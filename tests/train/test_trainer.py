"""The whole pipeline on a tiny model: learning per algorithm, accumulation invariance, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from agentrl.env import StepResult, TextEnv, register_env
from agentrl.train.batch import collate
from agentrl.train.config import load_config
from agentrl.train.trainer import Trainer
from agentrl.types import Trajectory


class FirstLetter(TextEnv):
    """Trivially learnable: one token whose text starts with a letter from a to m."""

    reward_weights = {"hit": 1.0}
    max_turns = 1

    def _reset_task(self, options):
        return "Say a word."

    def _score(self, action):
        ok = action.strip()[:1] in set("abcdefghijklm") and bool(action.strip())
        return StepResult("ok" if ok else "no", {"hit": float(ok)}, True)


ENV_ID = register_env("FirstLetterTest", f"{__name__}:FirstLetter", components=FirstLetter.reward_weights)


def _peaked_tiny(tokenizer):
    """The tiny Llama with a larger init: its first-token distribution is peaked enough that a
    group of 8 samples repeats tokens, so a few steps can move real probability mass."""
    from transformers import LlamaForCausalLM

    from agentrl.models import tiny_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(tiny_config(tokenizer, initializer_range=0.3)).eval()


def _learn_cfg(tmp_path, *extra):
    return load_config(None, [
        "model=tiny-random", f"out_dir={tmp_path}", f"env.id={ENV_ID}", "env.success_component=hit",
        "env.eval_seeds=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]", "rollout.eval_temperature=1.0",
        "rollout.group_size=8", "rollout.tasks_per_step=4", "rollout.max_turns=1",
        "rollout.max_new_tokens=1", "train.steps=12", "train.lr=0.01", "train.micro_batch_size=32",
        "train.checkpoint_every=0", *extra])


@pytest.mark.e2e
@pytest.mark.parametrize("algo", ["grpo", "dapo", "gspo", "gfpo", "dr_grpo", "gspo_token"])
def test_tiny_model_learns_trivial_env(tmp_path, tiny, algo):
    extra = ["algo.name=grpo", "filters.gfpo_k=6"] if algo == "gfpo" else [f"algo.name={algo}"]
    cfg = _learn_cfg(tmp_path, *extra)
    trainer = Trainer(cfg, model=_peaked_tiny(tiny[1]), tokenizer=tiny[1], console=Console(quiet=True))
    summary = trainer.fit()
    before, after = summary["eval_before"]["eval/success_rate"], summary["eval_after"]["eval/success_rate"]
    assert before < 0.7, "the task must not be solved before training"
    assert after >= 0.9, f"{algo}: eval success {before:.2f} -> {after:.2f}"
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert (tmp_path / "metrics.png").is_file()


def _fixed_batch(tokenizer, n=8):
    g = torch.Generator().manual_seed(0)
    trajs = []
    for i in range(n):
        prompt = torch.randint(10, 5000, (3 + i % 3,), generator=g).tolist()
        gen = torch.randint(10, 5000, (1 + (i * 5) % 7,), generator=g).tolist()
        ids = prompt + gen
        trajs.append(Trajectory(prompt_ids=prompt, token_ids=ids, loss_mask=[0] * len(prompt) + [1] * len(gen),
                                rollout_logprobs=[0.0] * len(ids)))
    adv = torch.randn(n, generator=g)
    return collate(trajs, adv, tokenizer.pad_token_id)


@pytest.mark.parametrize("algo", ["grpo", "dapo", "dr_grpo", "gspo", "ppo"])
def test_micro_batch_1x8_equals_8x1(tmp_path, tiny, algo):
    _, tok = tiny
    params = []
    for mbs in (8, 1):
        cfg = load_config(None, ["model=tiny-random", f"out_dir={tmp_path}/{mbs}", f"algo.name={algo}",
                                 f"train.micro_batch_size={mbs}", "train.lr=0.001", "train.grad_clip=1e9"])
        model = _peaked_tiny(tok).double()
        trainer = Trainer(cfg, model=model, tokenizer=tok, console=Console(quiet=True))
        batch = _fixed_batch(tok)
        batch.advantages = batch.advantages.double()
        batch.mask, batch.rollout_logp = batch.mask.double(), batch.rollout_logp.double()
        trainer.train_on(batch)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], rtol=0, atol=1e-10), (params[0] - params[1]).abs().max()


def _run_cli(out_dir: Path, steps: int, resume: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agentrl.cli", "train", "--set", "model=tiny-random",
           "--set", f"out_dir={out_dir}", "--set", "env.kwargs={low: 1, high: 6, max_turns: 3}",
           "--set", "env.eval_seeds=[0,1]", "--set", "rollout.group_size=4", "--set", "rollout.tasks_per_step=2",
           "--set", "rollout.max_turns=3", "--set", "rollout.max_new_tokens=6", "--set", f"train.steps={steps}",
           "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=5", "--set", "train.lr=0.001",
           "--set", "train.threads=1"]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _rows(out_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "loss" in r}


@pytest.mark.e2e
def test_kill_minus_9_then_resume_matches_uninterrupted_run(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    p = _run_cli(full, 6)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    p = _run_cli(crashed, 6)
    deadline = time.time() + 300
    while not (crashed / "checkpoints" / "step_000002").is_dir():  # killed mid-run, after a checkpoint
        assert p.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p = _run_cli(crashed, 6, resume=True)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    a, b = _rows(full), _rows(crashed)
    assert sorted(b) == list(range(1, 7))
    for step in range(1, 7):
        for key in ("loss", "reward", "generated_tokens"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)
    from safetensors.torch import load_file

    wa = load_file(str(full / "checkpoints" / "step_000006" / "model.safetensors"))
    wb = load_file(str(crashed / "checkpoints" / "step_000006" / "model.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k


@pytest.mark.e2e
def test_async_one_step_off_trains_and_records_staleness(tmp_path, tiny):
    cfg = _learn_cfg(tmp_path, "algo.name=grpo", "train.mode=async", "train.max_staleness=1",
                     "algo.tis_cap=2.0")
    trainer = Trainer(cfg, model=_peaked_tiny(tiny[1]), tokenizer=tiny[1], console=Console(quiet=True))
    assert trainer.backend.model is not trainer.model  # generation has its own copy
    summary = trainer.fit()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 12
    # step n+1 was generated while step n trained: its trajectories are one version behind
    assert max(r["staleness_max"] for r in steps) == 1.0
    assert all(r["staleness_max"] <= 1.0 for r in steps)
    assert summary["eval_after"]["eval/success_rate"] >= 0.9


def test_tree_rollouts_give_turn_level_token_advantages(tmp_path, tiny):
    from agentrl.train.advantages import compute_advantages

    cfg = load_config(None, ["model=tiny-random", f"out_dir={tmp_path}", "rollout.branching=tree",
                             "rollout.group_size=4", "rollout.tasks_per_step=2", "rollout.max_turns=3",
                             "rollout.max_new_tokens=4", "env.kwargs={low: 1, high: 6, max_turns: 3}"])
    trainer = Trainer(cfg, model=tiny[0], tokenizer=tiny[1], console=Console(quiet=True))
    groups, _ = trainer_run(trainer)
    adv = compute_advantages(groups, cfg)
    assert adv.advantages.dim() == 2 and adv.metrics["adv/turn_nodes"] >= 1
    # siblings share their prefix: before the first branch point every row carries only its
    # episode-level advantage, constant along the prefix
    for i, t in enumerate(adv.trajectories):
        first = t.branch_points[0] if t.branch_points else len(t.token_ids)
        row = adv.advantages[i, : max(first - 1, 1)]
        assert torch.allclose(row, row[0].expand_as(row))
    batch = collate(adv.trajectories, adv.advantages, tiny[1].pad_token_id, adv.drop)
    assert trainer.train_on(batch)["tokens"] > 0


def trainer_run(trainer):
    import asyncio

    return asyncio.run(trainer.rollout(0))


def test_several_updates_per_batch_make_the_clip_act(tmp_path, tiny):
    _, tok = tiny
    cfg = load_config(None, ["model=tiny-random", f"out_dir={tmp_path}", "algo.name=grpo",
                             "train.updates_per_batch=4", "train.lr=0.05", "train.micro_batch_size=3"])
    trainer = Trainer(cfg, model=_peaked_tiny(tok), tokenizer=tok, console=Console(quiet=True))
    m = trainer.train_on(_fixed_batch(tok))
    # after three large steps on the same batch the ratio left [0.8, 1.2] for some tokens
    assert m["algo/ratio_max"] > 1.2 or m["algo/ratio_min"] < 0.8
    assert m["algo/clip_frac_low"] + m["algo/clip_frac_high"] > 0

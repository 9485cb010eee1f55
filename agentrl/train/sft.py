"""Supervised warm-start on demonstrations from an environment's scripted policy.

The cold start of a small model is the practical obstacle to RL on agent tasks: a group whose
rewards are all equal teaches nothing. ``agentrl sft`` plays the environment with its
``scripted_action()`` expert, renders each episode with exactly the token bookkeeping the rollout
engine uses (:class:`agentrl.rollout.TokenBuilder`), and trains cross-entropy on the action
tokens only (loss mask = the tokens a policy would generate).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentrl.train.batch import collate, token_logprobs
from agentrl.types import Trajectory


def scripted_trajectory(env: Any, seed: int, tokenizer: Any, max_turns: int | None = None) -> Trajectory:
    """Play one episode with ``env.scripted_action()`` and return it as token ids + loss mask."""
    from agentrl.rollout.tokens import TokenBuilder, encode, feedback_messages, prompt_messages

    obs, info = env.reset(seed=seed)
    messages, tools = prompt_messages(obs, info, tokenizer)
    tb = TokenBuilder(tokenizer, messages, tools)
    total: dict[str, float] = {}
    reward, done, turns = 0.0, False, 0
    while not done and (max_turns is None or turns < max_turns):
        action = env.scripted_action()
        ids = [*encode(tokenizer, action), tokenizer.eos_token_id]
        tb.add_generation(ids, [0.0] * len(ids))
        feedback, r, terminated, truncated, step_info = env.step(action)
        reward += r
        for k, v in step_info["reward_components"].items():
            total[k] = total.get(k, 0.0) + v
        done = terminated or truncated
        turns += 1
        if not done:
            tb.add_feedback(feedback_messages(feedback, step_info))
    tb.finish()
    return Trajectory(
        env_id=getattr(env.spec, "id", "") or "", seed=seed, prompt_ids=tb.token_ids[: tb.prompt_len],
        token_ids=tb.token_ids, loss_mask=tb.loss_mask, rollout_logprobs=[0.0] * len(tb.token_ids),
        reward_components=total, reward_weights=dict(env.reward_weights), reward=reward,
    )


@dataclass
class SFTResult:
    steps: int
    first_loss: float
    last_loss: float
    demos: int
    mean_demo_reward: float
    wall_s: float


def sft(
    model: Any,
    tokenizer: Any,
    env_id: str,
    seeds: list[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 5e-5,
    seed: int = 0,
    console: Console | None = None,
) -> SFTResult:
    """Train ``model`` in place on scripted demonstrations of ``env_id`` (one per seed)."""
    from agentrl.env import make

    env = make(env_id, **(env_kwargs or {}))
    demos = [scripted_trajectory(env, s, tokenizer) for s in seeds]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = random.Random(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    n_batches = epochs * ((len(demos) + batch_size - 1) // batch_size)
    cols = (TextColumn("[bold]sft"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn())
    model.train()
    with Progress(*cols, console=console or Console()) as progress:
        task = progress.add_task("sft", total=n_batches, loss=0.0)
        for _ in range(epochs):
            order = list(range(len(demos)))
            rng.shuffle(order)
            for i in range(0, len(order), batch_size):
                chunk = [demos[j] for j in order[i : i + batch_size]]
                batch = collate(chunk, torch.zeros(len(chunk)), tokenizer.pad_token_id)
                logp, _ = token_logprobs(model, batch)  # (B, T)
                loss = -(logp * batch.mask).sum() / batch.mask.sum().clamp(min=1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                losses.append(loss.item())
                progress.update(task, advance=1, loss=losses[-1])
    model.eval()
    return SFTResult(len(losses), losses[0], losses[-1], len(demos),
                     sum(d.reward for d in demos) / len(demos), time.perf_counter() - t0)

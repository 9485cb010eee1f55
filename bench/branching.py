"""Branching cost: generated turns, tokens and wall time of each policy (real SmolLM2, GuessNumber).

Two comparisons, each over the same tasks:
  equal_64  64 trajectories per task over 3 turns: naive per-turn sampling with G=4 (G**T = 64
            leaves), ``independent`` with G=64, ``tree`` with 8 children at turns 0 and 1.
  grpo_4    4 trajectories per task (a usual GRPO group): ``independent`` vs ``tree`` (2 children
            at turns 0 and 1); naive per-turn sampling cannot stop at 4 (it makes 64).
``tree`` merges identical states by default, so its leaf count can fall below the target: the
merged paths are counted in ``multiplicity`` (reported as ``weighted_trajectories``).

    flock /tmp/agentrl-heavy.lock .venv/bin/python bench/branching.py --out bench/results/branching.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agentrl.backends.hf import HFBackend
from agentrl.models import load_model
from agentrl.rollout import RolloutConfig, RolloutManager, RolloutTask, turn_groups

SETTINGS: dict[str, list[tuple[str, int, dict[str, Any]]]] = {
    "equal_64": [
        ("naive_per_turn", 4, {"branching": "per_turn"}),
        ("independent", 64, {"branching": "independent"}),
        ("tree", 64, {"branching": "tree", "branch_factor": 8, "branch_turns": [0, 1]}),
    ],
    "grpo_4": [
        ("independent", 4, {"branching": "independent"}),
        ("tree", 4, {"branching": "tree", "branch_factor": 2, "branch_turns": [0, 1]}),
    ],
}


async def _measure(backend: HFBackend, tok: Any, tasks: list[RolloutTask], cfg: RolloutConfig) -> dict[str, Any]:
    start = time.perf_counter()
    groups = await RolloutManager(backend, tok, cfg).run(tasks)
    wall = time.perf_counter() - start
    trajs = [t for g in groups for t in g]
    # tokens each generated turn really cost: siblings share the Turn objects of their prefix
    turns = {id(turn): len(turn.token_ids) for t in trajs for turn in t.turns}
    n_tasks = len(tasks)
    return {
        "trajectories_per_task": len(trajs) / n_tasks,
        "weighted_trajectories_per_task": sum(t.metadata.get("multiplicity", 1) for t in trajs) / n_tasks,
        "generated_turns_per_task": sum(g.metadata["generated_turns"] for g in groups) / n_tasks,
        "generated_tokens_per_task": sum(turns.values()) / n_tasks,
        "generated_tokens_per_trajectory": round(sum(turns.values()) / max(1, len(trajs)), 2),
        "turn_level_groups_per_task": sum(len(turn_groups(g)) for g in groups) / n_tasks,
        "merged_per_task": sum(g.metadata.get("merged", 0) for g in groups) / n_tasks,
        "wall_s": round(wall, 2),
        "mean_reward": round(sum(t.reward for t in trajs) / max(1, len(trajs)), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tasks", type=int, default=2, help="tasks (seeds) per setting")
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--settings", default="equal_64,grpo_4")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    model, tok = load_model(args.model)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "setup": {"env": "agentrl/GuessNumber-v0", "model": args.model, "tasks": args.tasks,
                  "max_turns": args.max_turns, "max_new_tokens": args.max_new_tokens},
    }
    for setting in args.settings.split(","):
        result[setting] = {}
        for name, group_size, kw in SETTINGS[setting]:
            tasks = [RolloutTask(env_id="agentrl/GuessNumber-v0", seed=s, group_size=group_size)
                     for s in range(args.tasks)]
            cfg = RolloutConfig(concurrency=args.batch, max_turns=args.max_turns,
                                max_new_tokens=args.max_new_tokens, seed=0, **kw)
            backend = HFBackend(model, tok, max_batch_size=args.batch)
            res = asyncio.run(_measure(backend, tok, tasks, cfg))
            asyncio.run(backend.close())
            result[setting][name] = res
            print(f"{setting} {name}: {json.dumps(res)}", file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

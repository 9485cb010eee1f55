"""Rollout throughput: the same GuessNumber episodes one after another vs through the manager.

Runs (for the in-process HF backend, and for vLLM when its backend and server are available):
  sequential        one episode at a time, backend batch size 1, no prefix cache (the plain loop)
  sequential_cache  one episode at a time, batch size 1, prefix cache on (isolates the cache)
  manager           all episodes through RolloutManager (concurrency = batch size = episodes)
and prints JSON with generated tokens/s, episodes/minute and the speed-up ratios.

    flock /tmp/agentrl-heavy.lock .venv/bin/python bench/rollout_throughput.py \
        --out bench/results/rollout_throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agentrl.backends import make_backend
from agentrl.backends.hf import HFBackend
from agentrl.models import load_model
from agentrl.rollout import RolloutConfig, RolloutManager, RolloutTask


async def _run(backend: Any, tok: Any, tasks: list[RolloutTask], cfg: RolloutConfig) -> dict[str, Any]:
    manager = RolloutManager(backend, tok, cfg)
    start = time.perf_counter()
    groups = await manager.run(tasks)
    wall = time.perf_counter() - start
    trajs = [t for g in groups for t in g]
    gen = sum(t.num_generated for t in trajs)
    return {
        "wall_s": round(wall, 2),
        "episodes": len(trajs),
        "turns": sum(len(t.turns) for t in trajs),
        "generated_tokens": gen,
        "tokens_per_s": round(gen / wall, 2),
        "episodes_per_min": round(60 * len(trajs) / wall, 2),
        "failures": sum(t.status == "failed" for t in trajs),
        "mean_reward": round(sum(t.reward for t in trajs) / len(trajs), 4),
    }


def _hf_runs(args: argparse.Namespace, tasks: list[RolloutTask]) -> dict[str, Any]:
    model, tok = load_model(args.model)
    base = dict(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    modes = {
        "sequential": (dict(max_batch_size=1, prefix_cache_tokens=0), 1),
        "sequential_cache": (dict(max_batch_size=1), 1),
        "manager": (dict(max_batch_size=args.episodes), args.episodes),
    }
    out: dict[str, Any] = {}
    for name, (backend_kw, concurrency) in modes.items():
        if name not in args.modes:
            continue
        backend = HFBackend(model, tok, **backend_kw)
        cfg = RolloutConfig(concurrency=concurrency, **base)
        res = asyncio.run(_run(backend, tok, tasks, cfg))
        res["backend_stats"] = dict(backend.stats) | {"prefix_cache": backend.prefix_cache_stats()}
        asyncio.run(backend.close())
        out[name] = res
        print(f"hf {name}: {json.dumps(res)}", file=sys.stderr, flush=True)
    _ratios(out)
    return out


def _vllm_runs(args: argparse.Namespace, tasks: list[RolloutTask]) -> dict[str, Any]:
    """vLLM: sequential vs manager against one server (skipped when unavailable)."""
    if not args.vllm_options:
        return {"skipped": "no --vllm-options given (needs the vLLM venv and backend; see README)"}
    try:
        opts = json.loads(args.vllm_options)
        backend = make_backend("vllm", **opts)
        _, tok = load_model(args.model)
    except Exception as e:
        return {"skipped": f"vLLM backend unavailable: {type(e).__name__}: {e}"}
    base = dict(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    out = {name: asyncio.run(_run(backend, tok, tasks, RolloutConfig(concurrency=c, **base)))
           for name, c in (("sequential", 1), ("manager", args.episodes))}
    asyncio.run(backend.close())
    _ratios(out)
    return out


def _ratios(out: dict[str, Any]) -> None:
    seq = out.get("sequential", {}).get("tokens_per_s")
    for name in ("sequential_cache", "manager"):
        if seq and name in out:
            out[f"{name}_vs_sequential"] = round(out[name]["tokens_per_s"] / seq, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--max-turns", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--modes", default="sequential,sequential_cache,manager")
    p.add_argument("--vllm-options", default=os.environ.get("AGENTRL_VLLM_OPTIONS", ""),
                   help="JSON kwargs for make_backend('vllm', ...); empty: skip vLLM")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.modes = set(args.modes.split(","))
    tasks = [RolloutTask(env_id="agentrl/GuessNumber-v0", seed=i, group_size=1) for i in range(args.episodes)]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "setup": {"env": "agentrl/GuessNumber-v0", "model": args.model, "episodes": args.episodes,
                  "max_turns": args.max_turns, "max_new_tokens": args.max_new_tokens, "temperature": 1.0},
        "hf": _hf_runs(args, tasks),
        "vllm": _vllm_runs(args, tasks),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""vLLM backend throughput: 32 GuessNumber first-turn prompts, 64 new tokens each, sent one
after another vs all at once through :class:`agentrl.backends.vllm.VLLMBackend`.

Starts its own vLLM server on the untied embedded model unless ``--base-url`` is given, and
prints JSON (generated tokens/s, requests/s, the concurrent/sequential ratio). Heavy (two cores,
about 5 GB): run it alone.

    flock /tmp/agentrl-heavy.lock .venv/bin/python bench/vllm_backend.py \
        --out bench/results/vllm_backend.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from agentrl.backends import SamplingParams
from agentrl.backends.vllm import VLLMBackend


def guess_number_prompts(tok: Any, n: int) -> list[list[int]]:
    """First-turn prompt ids of ``n`` GuessNumber episodes (seeds 0..n-1)."""
    import agentrl  # noqa: F401  (registers the catalog)
    from agentrl.env import make

    prompts = []
    for seed in range(n):
        env = make("agentrl/GuessNumber-v0")
        obs, info = env.reset(seed=seed)
        messages = [{"role": "user", "content": obs}]
        if info.get("system_prompt"):
            messages.insert(0, {"role": "system", "content": info["system_prompt"]})
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return prompts


async def _measure(backend: VLLMBackend, prompts: list[list[int]], tokens: int,
                   concurrent: bool, seeded: bool = True) -> dict[str, float]:
    params = [SamplingParams(max_new_tokens=tokens, seed=i) for i in range(len(prompts))]
    backend.seeded = seeded
    start = time.perf_counter()
    if concurrent:
        gens = await asyncio.gather(*(backend.generate(p, s) for p, s in zip(prompts, params, strict=True)))
    else:
        gens = [await backend.generate(p, s) for p, s in zip(prompts, params, strict=True)]
    wall = time.perf_counter() - start
    generated = sum(len(g.token_ids) for g in gens)
    return {"wall_s": round(wall, 2), "generated_tokens": generated,
            "tokens_per_s": round(generated / wall, 1),
            "requests_per_s": round(len(prompts) / wall, 2)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    backend = VLLMBackend(args.base_url, server_options={"startup_timeout": 600}
                          if args.base_url is None else None)
    startup = time.perf_counter() - t0
    try:
        prompts = guess_number_prompts(backend.tokenizer, args.requests)
        await _measure(backend, prompts[:2], 8, concurrent=True)  # warm-up
        seq = await _measure(backend, prompts, args.tokens, False, not args.no_seed)
        conc = await _measure(backend, prompts, args.tokens, True, not args.no_seed)
    finally:
        await backend.close()
    return {
        "benchmark": "vllm_backend", "requests": args.requests, "max_new_tokens": args.tokens,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "seeded": not args.no_seed,
        "server_startup_s": round(startup, 1) if args.base_url is None else None,
        "sequential": seq, "concurrent": conc,
        "speedup": round(conc["tokens_per_s"] / seq["tokens_per_s"], 2),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default=None, help="an already running server (default: start one)")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--no-seed", action="store_true",
                   help="no per-request seeds (vLLM samples seeded requests one by one)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""agentrl vs TRL's GRPOTrainer: the same model, task and batch; seconds per step and peak memory.

Both sides train the embedded SmolLM2-135M-Instruct (the same safetensors folder, float32, CPU,
2 torch threads) on one single-turn task: "What is {a} + {b}? Reply with just the number." with
the same system prompt, the same seeded (a, b) list in the same order, and the same reward
(1.0 when the completion's last integer is a + b, else 0.0; :func:`trl_side.addition_reward`).
Per step: 2 prompts x 4 generations = 8 completions of at most 64 tokens at temperature 1.0, one
micro-batch of 8, AdamW (lr 1e-6, betas 0.9/0.99, clip 1.0), the full model trained, beta 0.

Each side runs in its own subprocess (its peak RSS is its own), one after the other, each under
``flock`` of the shared heavy-job lock (so do not wrap it in that flock too), or, to queue once
for the whole run, hold the lock outside and switch the per-side lock off::

    .venv/bin/python bench/vs_trl.py --algos all --out bench/results/vs_trl.json
    flock /tmp/agentrl-heavy.lock .venv/bin/python bench/vs_trl.py --algos all --lock ''

agentrl's time per step is ``time/step_s`` of its metrics.jsonl (rollout + advantages + update);
TRL's is a TrainerCallback's on_step_begin -> on_step_end. The first ``--warmup-steps`` are
dropped. Loss pairs: grpo <-> loss_type="grpo"; dr_grpo <-> "dr_grpo" (no std scaling on either
side); dapo <-> "dapo" with epsilon_high 0.28; gspo <-> importance_sampling_level="sequence",
loss_type="grpo", epsilon 3e-4 / 4e-4 (TRL's GSPO recipe, one generation per step).
TRL's venv (``.venv-trl``) is created when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # trl_side.py (stdlib-only at import) holds the shared reward
    sys.path.insert(0, str(_HERE))

from trl_side import RESULT_PREFIX, addition_reward, peak_rss_mb  # noqa: E402

from agentrl.env import StepResult, TextEnv, register_env  # noqa: E402

ROOT = _HERE.parent
SYSTEM_PROMPT = "You are a precise calculator. Answer with the number only."
TARGET_TIME_RATIO = 0.8
TRL_VENV_INSTALL = ["torch==2.13.0", "trl==1.16.0", "datasets", "psutil"]

# agentrl config overrides <-> TRL GRPOConfig fields, per loss
ALGOS: dict[str, dict[str, dict[str, Any]]] = {
    "grpo": {"agentrl": {"algo.name": "grpo"},
             "trl": {"loss_type": "grpo", "epsilon": 0.2}},
    "dr_grpo": {"agentrl": {"algo.name": "dr_grpo", "algo.advantage_scale": "none"},
                "trl": {"loss_type": "dr_grpo", "epsilon": 0.2, "scale_rewards": "none"}},
    "dapo": {"agentrl": {"algo.name": "dapo"},
             "trl": {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28}},
    "gspo": {"agentrl": {"algo.name": "gspo"},
             "trl": {"importance_sampling_level": "sequence", "loss_type": "grpo",
                     "epsilon": 3e-4, "epsilon_high": 4e-4}},
}


class Addition(TextEnv):
    """One turn: add two two-digit integers; ``correct`` is :func:`addition_reward`."""

    reward_weights: ClassVar[dict[str, float]] = {"correct": 1.0}
    max_turns = 1
    system_prompt = SYSTEM_PROMPT

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        a, b = (int(x) for x in self.np_random.integers(10, 100, size=2))
        self.answer = a + b
        return f"What is {a} + {b}? Reply with just the number."

    def _score(self, action: str) -> StepResult:
        r = addition_reward(action, self.answer)
        return StepResult("Correct." if r else f"No: {self.answer}.", {"correct": r}, terminated=True)


ENV_ID = register_env("VsTrlAddition", f"{__name__}:Addition", components=Addition.reward_weights,
                      description="bench/vs_trl.py: single-turn two-digit addition.")


def prompts_for(seeds: range) -> list[dict[str, Any]]:
    """The task of every seed, exactly as the agentrl env poses it (TRL gets the same list)."""
    out = []
    for seed in seeds:
        env = Addition()
        user, info = env.reset(seed=seed)
        out.append({"seed": seed, "system": info["system_prompt"], "user": user, "answer": env.answer})
    return out


def build_spec(algo: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything both sides need, in one JSON-able dict."""
    from agentrl.models import embedded_model_dir

    steps = args.warmup_steps + args.timed_steps
    tasks = 2
    return {
        "algo": algo, "seed": 0, "steps": steps, "threads": args.threads, "lr": 1e-6,
        "betas": [0.9, 0.99], "grad_clip": 1.0, "model_dir": str(embedded_model_dir()),
        "train_seed_start": args.seed_start,
        "prompts": prompts_for(range(args.seed_start, args.seed_start + tasks * steps)),
        "batch": {"tasks_per_step": tasks, "group_size": 4, "completions_per_step": tasks * 4,
                  "max_new_tokens": 64, "temperature": 1.0, "micro_batch_size": tasks * 4},
        "agentrl_overrides": {**ALGOS[algo]["agentrl"], **dict(kv.split("=", 1) for kv in args.agentrl_set)},
        "trl_loss": ALGOS[algo]["trl"],
        "gradient_checkpointing": not args.trl_no_gradient_checkpointing,
    }


# ---- the agentrl side (runs in its own subprocess: `vs_trl.py --side agentrl SPEC`) -----------


def _agentrl_config(spec: dict[str, Any], out_dir: str) -> Any:
    from agentrl.train.config import load_config

    b = spec["batch"]
    base = {
        "model": spec["model_dir"], "seed": spec["seed"], "out_dir": out_dir,
        "env.id": ENV_ID, "env.train_seed_start": spec["train_seed_start"], "env.eval_seeds": "[]",
        "rollout.tasks_per_step": b["tasks_per_step"], "rollout.group_size": b["group_size"],
        "rollout.max_turns": 1, "rollout.max_new_tokens": b["max_new_tokens"],
        "rollout.temperature": b["temperature"], "filters.max_refill_rounds": 0,
        "train.steps": spec["steps"], "train.lr": spec["lr"], "train.betas": json.dumps(spec["betas"]),
        "train.grad_clip": spec["grad_clip"], "train.micro_batch_size": b["micro_batch_size"],
        "train.threads": spec["threads"], "train.checkpoint_every": 0,
    }
    overrides = {**base, **spec["agentrl_overrides"]}
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def run_agentrl_side(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec["steps"]`` steps with agentrl's Trainer; per-step times from metrics.jsonl."""
    import time

    import torch

    from agentrl.train.metrics import read_metrics
    from agentrl.train.trainer import Trainer

    cpu_start: list[float] = []
    cpu_end: list[float] = []

    class BenchTrainer(Trainer):
        """No evaluation and no checkpoint: TRL's side does neither (save_strategy="no").

        Records process CPU seconds from the start of each step's rollout to the end of its
        update (wall time per step comes from metrics.jsonl).
        """

        async def evaluate(self, seeds: list[int] | None = None) -> dict[str, float]:
            return {}

        async def rollout(self, step: int) -> Any:
            cpu_start.append(time.process_time())
            return await super().rollout(step)

        def train_on(self, batch: Any) -> dict[str, float]:
            out = super().train_on(batch)
            cpu_end.append(time.process_time())
            return out

        def save(self) -> Path:
            return self.out_dir

    with tempfile.TemporaryDirectory(prefix="vs_trl-agentrl-") as out_dir:
        cfg = _agentrl_config(spec, out_dir)
        trainer = BenchTrainer(cfg)
        t0 = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - t0
        rows = [r for r in read_metrics(Path(out_dir) / "metrics.jsonl") if "time/step_s" in r]
    n = spec["batch"]["completions_per_step"]
    steps = [{"step_s": r["time/step_s"], "cpu_s": e - b, "generate_s": r["time/rollout_s"],
              "reward": r["reward"], "completion_tokens": r["generated_tokens"] / n}
             for r, b, e in zip(rows, cpu_start, cpu_end, strict=True)]
    return {"side": "agentrl", "config": {"algo": cfg.algo.model_dump(), "train": cfg.train.model_dump()},
            "threads": torch.get_num_threads(), "train_wall_s": round(wall, 2), "steps": steps,
            **peak_rss_mb()}


# ---- the driver ---------------------------------------------------------------------------------


def ensure_trl_venv(venv: Path) -> Path:
    """Create TRL's venv (torch exactly 2.13.0) when it is missing; return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (torch==2.13.0, trl==1.16.0) ...", file=sys.stderr, flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", *TRL_VENV_INSTALL], check=True)
    probe = "import torch, trl; print(torch.__version__, trl.__version__)"
    versions = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True)
    torch_version = versions.stdout.split()[0]
    if not torch_version.startswith("2.13.0"):
        raise SystemExit(f"{venv}: torch {torch_version} installed; this bench needs exactly 2.13.0")
    return python


def _run_side(cmd: list[str], args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Run one side under the heavy-job lock; parse its RESULT line."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    full = (["flock", args.lock] if args.lock else []) + cmd
    print(f"[vs_trl] {name}: {' '.join(full)}", file=sys.stderr, flush=True)
    proc = subprocess.run(full, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    load_after = os.getloadavg()[0]  # other users' load skews timings: keep it in the record
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "loadavg_1m_after": round(load_after, 2)}
    tail = (proc.stdout + proc.stderr)[-4000:]
    raise RuntimeError(f"{name} side exited with {proc.returncode} and no result line:\n{tail}")


def summarise(side: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Means over the timed steps (after the warm-up) plus the raw per-step numbers."""
    timed = side["steps"][warmup:]
    if not timed:
        raise RuntimeError(f"{side['side']}: only {len(side['steps'])} steps ran; none left to time")

    def mean(key: str) -> float:
        return round(statistics.fmean(s.get(key, float("nan")) for s in timed), 3)

    s, g = mean("step_s"), mean("generate_s")
    return {"s_per_step": s, "generate_s_per_step": g, "train_s_per_step": round(s - g, 3),
            "cpu_s_per_step": mean("cpu_s"),
            "peak_rss_mb": side["peak_rss_mb"], "children_peak_rss_mb": side["children_peak_rss_mb"],
            "mean_completion_tokens": mean("completion_tokens"), "mean_reward": mean("reward"),
            "timed_steps": len(timed), "train_wall_s": side["train_wall_s"], "threads": side["threads"],
            "loadavg_1m_after": side["loadavg_1m_after"],
            "per_step": [{k: round(v, 3) for k, v in st.items()} for st in side["steps"]]}


def compare(algo: str, args: argparse.Namespace, trl_python: Path) -> dict[str, Any]:
    """Both sides on the same spec, one after the other; ratios agentrl / TRL."""
    spec = build_spec(algo, args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="vs_trl-spec-", delete=False) as f:
        json.dump(spec, f)
    try:
        ours = _run_side([sys.executable, str(Path(__file__).resolve()), "--side", "agentrl", f.name],
                         args, f"agentrl/{algo}")
        theirs = _run_side([str(trl_python), str(_HERE / "trl_side.py"), f.name], args, f"trl/{algo}")
    finally:
        os.unlink(f.name)
    a, t = summarise(ours, args.warmup_steps), summarise(theirs, args.warmup_steps)
    res = {"agentrl": a, "trl": t,
           "time_ratio": round(a["s_per_step"] / t["s_per_step"], 3),
           "memory_ratio": round(a["peak_rss_mb"] / t["peak_rss_mb"], 3),
           "generate_time_ratio": round(a["generate_s_per_step"] / t["generate_s_per_step"], 3),
           "train_time_ratio": round(a["train_s_per_step"] / t["train_s_per_step"], 3),
           "cpu_time_ratio": round(a["cpu_s_per_step"] / t["cpu_s_per_step"], 3),
           "trl_settings": spec["trl_loss"], "agentrl_overrides": spec["agentrl_overrides"],
           "agentrl_config": ours["config"], "trl_versions": theirs["versions"]}
    res["meets_target"] = res["time_ratio"] <= TARGET_TIME_RATIO and res["memory_ratio"] <= 1.0
    print(f"[vs_trl] {algo}: {json.dumps({k: res[k] for k in ('time_ratio', 'memory_ratio')})}",
          file=sys.stderr, flush=True)
    return res


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads_each_side": args.threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    spec = build_spec("grpo", args)
    return {
        "model": spec["model_dir"], "task": "single-turn two-digit addition, reward = last integer == a+b",
        "system_prompt": SYSTEM_PROMPT, "prompt_seeds": [p["seed"] for p in spec["prompts"]],
        **spec["batch"], "lr": spec["lr"], "betas": spec["betas"], "grad_clip": spec["grad_clip"],
        "beta": 0.0, "warmup_steps": args.warmup_steps, "timed_steps": args.timed_steps,
        "trl_gradient_checkpointing": spec["gradient_checkpointing"],
        "agentrl": "Trainer defaults otherwise: hf backend (continuous batching, prefix cache), sync "
                   "mode, gradient_checkpointing=False, train_layers=None (full model)",
        "target": f"agentrl time_ratio <= {TARGET_TIME_RATIO} at memory_ratio <= 1.0",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", default="grpo", help=f"comma list of {', '.join(ALGOS)}, or 'all'")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--timed-steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    p.add_argument("--seed-start", type=int, default=5000, help="first task seed")
    p.add_argument("--agentrl-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra agentrl config override, e.g. train.gradient_checkpointing=true")
    p.add_argument("--trl-no-gradient-checkpointing", action="store_true")
    p.add_argument("--trl-venv", type=Path, default=ROOT / ".venv-trl")
    p.add_argument("--lock", default="/tmp/agentrl-heavy.lock", help="flock file per side ('' = none)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--side", choices=["agentrl"], help=argparse.SUPPRESS)
    p.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.algos = list(ALGOS) if args.algos == "all" else args.algos.split(",")
    unknown = sorted(set(args.algos) - set(ALGOS))
    if unknown:
        p.error(f"--algos: unknown {unknown}; valid: {', '.join(ALGOS)} or all")
    if args.warmup_steps < 0 or args.timed_steps < 1:
        p.error("--warmup-steps must be >= 0 and --timed-steps >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.side == "agentrl":
        spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
        print(RESULT_PREFIX + json.dumps(run_agentrl_side(spec)), flush=True)
        return
    trl_python = ensure_trl_venv(args.trl_venv)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": _machine(args),
              "setup": _setup(args), "results": {algo: compare(algo, args, trl_python) for algo in args.algos}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

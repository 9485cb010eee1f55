"""The trainer: rollouts -> per-component advantages -> filters -> policy loss -> AdamW step.

The outer loop is fixed; subclasses override small hooks (``rollout``, ``advantages``,
``evaluate``). The loop never branches on an algorithm's name: the loss, its aggregation and the
filters are registry entries chosen by the config.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from agentrl.train.advantages import AdvantageResult, compute_advantages
from agentrl.train.batch import Batch, collate, token_logprobs
from agentrl.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    save_checkpoint,
    set_rng_state,
)
from agentrl.train.config import TrainConfig, dump_config
from agentrl.train.metrics import MetricsLogger, plot_metrics
from agentrl.train.progress import TrainProgress
from agentrl.types import Trajectory, TrajectoryGroup, success_of


class Trainer:
    """Trains a policy on a text environment with a registered policy-gradient loss."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: Any = None,
        tokenizer: Any = None,
        console: Console | None = None,
    ) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.last_eval: list[Trajectory] = []
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self._seed_everything(cfg.seed)
        if model is None:
            from agentrl.models import load_model

            model, tokenizer = load_model(cfg.model, seed=cfg.seed)
        self.model, self.tokenizer = model, tokenizer
        self._freeze_layers(cfg.train.train_layers)
        if cfg.train.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.ref_model = self._frozen_copy() if cfg.algo.beta > 0 else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        # fused: one kernel per step, no parameter-sized temporaries of the foreach path
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.train.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay,
            fused=True,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.backend = self._make_backend()

    # ---- setup helpers ----------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _freeze_layers(self, top_n: int | None) -> None:
        if top_n is None:
            return
        layers = self.model.get_decoder().layers
        if top_n > len(layers):
            raise ValueError(f"train.train_layers={top_n} > the model's {len(layers)} layers")
        for p in self.model.parameters():
            p.requires_grad_(False)
        for layer in layers[-top_n:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in self.model.get_decoder().norm.parameters():
            p.requires_grad_(True)

    def _frozen_copy(self) -> torch.nn.Module:
        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def _lr_lambda(self, step: int) -> float:
        t = self.cfg.train
        if step < t.warmup_steps:
            return (step + 1) / (t.warmup_steps + 1)
        frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        if t.lr_schedule == "linear":
            return max(0.0, 1.0 - frac)
        if t.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    def _make_backend(self) -> Any:
        from agentrl.backends import make_backend

        r = self.cfg.rollout
        if r.backend == "hf":
            # sync mode shares the policy object (pushing weights is free); async mode generates
            # with its own copy so training step n never races generation of step n+1
            gen_model = self.model if self.cfg.train.mode == "sync" else self._frozen_copy()
            return make_backend("hf", model=gen_model, tokenizer=self.tokenizer, **r.backend_options)
        return make_backend(r.backend, **r.backend_options)

    def _manager(self, seed: int, temperature: float | None = None) -> Any:
        """A rollout manager over the shared backend; every call gets its own sampling seed."""
        from agentrl.rollout import RolloutConfig, RolloutManager

        r = self.cfg.rollout
        rc = RolloutConfig(
            max_turns=r.max_turns,
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature if temperature is None else temperature,
            top_p=r.top_p,
            concurrency=r.concurrency,
            branching=r.branching,
            seed=seed,
        )
        return RolloutManager(self.backend, self.tokenizer, rc)

    # ---- hooks ------------------------------------------------------------------------------
    def tasks_for_step(self, step: int, round_: int = 0) -> list[Any]:
        """Tasks of ``step`` (refill round ``round_``): the data position is (step, round)."""
        from agentrl.rollout import RolloutTask

        r, e = self.cfg.rollout, self.cfg.env
        base = e.train_seed_start + (step * (1 + self.cfg.filters.max_refill_rounds) + round_) * r.tasks_per_step
        return [RolloutTask(env_id=e.id, env_kwargs=self._env_kwargs(), seed=base + i, group_size=r.group_size)
                for i in range(r.tasks_per_step)]

    def _sample_seed(self, step: int, round_: int = 0) -> int:
        return (self.cfg.seed * 1_000_003 + step * 101 + round_) % 2**31

    def _env_kwargs(self) -> dict[str, Any]:
        kw = dict(self.cfg.env.kwargs)
        if self.cfg.env.reward_weights:
            kw["reward_weights"] = dict(self.cfg.env.reward_weights)
        return kw

    async def rollout(self, step: int) -> tuple[list[TrajectoryGroup], dict[str, float]]:
        """Collect the step's groups; with dynamic sampling, refill dropped groups."""
        groups = await self._manager(self._sample_seed(step)).run(self.tasks_for_step(step))
        stats: dict[str, float] = {"rollout/refill_rounds": 0.0}
        if not self.cfg.filters.dynamic_sampling:
            return groups, stats
        from agentrl.algos.filters import dynamic_sampling

        kept, dropped = dynamic_sampling(groups)
        stats["filter/groups_dropped"] = float(dropped)
        for round_ in range(1, self.cfg.filters.max_refill_rounds + 1):
            if len(kept) >= len(groups):
                break
            more = await self._manager(self._sample_seed(step, round_)).run(self.tasks_for_step(step, round_))
            extra, d = dynamic_sampling(more)
            kept += extra
            stats["filter/groups_dropped"] += d
            stats["rollout/refill_rounds"] = float(round_)
        return (kept[: len(groups)] or groups), stats

    def advantages(self, groups: list[TrajectoryGroup]) -> AdvantageResult:
        return compute_advantages(groups, self.cfg)

    # ---- one optimisation step --------------------------------------------------------------
    def _loss_overrides(self) -> dict[str, Any]:
        a, r = self.cfg.algo, self.cfg.rollout
        kw: dict[str, Any] = {"max_tokens": r.max_turns * r.max_new_tokens}
        for key in ("eps_low", "eps_high", "agg"):
            if getattr(a, key) is not None:
                kw[key] = getattr(a, key)
        if a.beta > 0:
            kw.update(beta=a.beta, kl=a.kl)
        if a.tis_cap is not None:
            kw["tis_cap"] = a.tis_cap
        return kw

    def train_on(self, batch: Batch) -> dict[str, float]:
        """``train.updates_per_batch`` clipped AdamW steps on one rollout batch.

        With one update the ratio is 1 and ``old_logp = sg(logp)`` costs nothing; with several
        (PPO-style epochs) the old log-probs are computed once before the first update, so the
        ratio and its clip act from the second update on.
        """
        mbs = self.cfg.train.micro_batch_size
        micro = [mb for mb in (batch.select(slice(i, i + mbs)) for i in range(0, len(batch), mbs))
                 if mb.num_tokens > 0]
        old: list[torch.Tensor | None] = [None] * len(micro)
        if self.cfg.train.updates_per_batch > 1:
            with torch.no_grad():
                old = [token_logprobs(self.model, mb)[0] for mb in micro]
        self.model.train()
        out: dict[str, float] = {}
        for _ in range(self.cfg.train.updates_per_batch):
            out = self._accumulate_and_step(batch, micro, old)
        self.scheduler.step()
        self.model.eval()
        return {**out, "lr": self.scheduler.get_last_lr()[0], "tokens": float(batch.num_tokens)}

    def _accumulate_and_step(self, batch: Batch, micro: list[Batch], old: list[Any]) -> dict[str, float]:
        """Gradient accumulation over micro-batches, then one clipped AdamW step.

        Each micro-batch loss is weighted by its share of the batch's normaliser (tokens for
        token-level aggregation, sequences otherwise), so 1 x 8 and 8 x 1 give the same update.
        """
        from agentrl.algos import aggregation_of, normaliser_share, policy_loss

        overrides = self._loss_overrides()
        agg = aggregation_of(self.cfg.algo.name, overrides.get("agg"))
        total_tokens = max(batch.num_tokens, 1)
        sums: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for mb, old_logp in zip(micro, old, strict=True):
            logp, entropy = token_logprobs(self.model, mb, with_entropy=True)  # (b, T)
            extra: dict[str, Any] = {}
            if self.ref_model is not None:
                with torch.no_grad():
                    extra["ref_logp"], _ = token_logprobs(self.ref_model, mb)
            if "tis_cap" in overrides:
                extra["rollout_logp"] = mb.rollout_logp
            old_logp = logp.detach() if old_logp is None else old_logp
            out = policy_loss(self.cfg.algo.name, logp, old_logp, mb.advantages, mb.mask,
                              **overrides, **extra)
            share = normaliser_share(mb.mask, batch.mask, agg)
            (out.loss * share).backward()
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss.detach()) * share
            sums["entropy"] = sums.get("entropy", 0.0) + float((entropy * mb.mask).sum()) / total_tokens
            for k, v in out.metrics.items():
                if isinstance(v, (int, float)):
                    sums[f"algo/{k}"] = sums.get(f"algo/{k}", 0.0) + float(v) * mb.num_tokens / total_tokens
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        self.optimizer.step()
        return {**sums, "grad_norm": float(grad_norm)}

    def _step_metrics(self, step: int, groups: list[TrajectoryGroup], adv: AdvantageResult) -> dict[str, float]:
        trajs = [t for g in groups for t in g.trajectories]
        m: dict[str, float] = dict(adv.metrics)
        comps = sorted({k for t in trajs for k in t.reward_components})
        for k in comps:
            m[f"reward/{k}"] = float(np.mean([t.reward_components.get(k, 0.0) for t in trajs]))
        m["reward"] = float(np.mean([t.reward for t in trajs]))
        m["success_rate"] = float(np.mean([success_of(t.reward_components, self.cfg.env.success_component) for t in trajs]))
        m["failed"] = float(sum(t.status == "failed" for t in trajs))
        m["generated_tokens"] = float(sum(t.num_generated for t in trajs))
        versions = [t.weight_version for t in trajs]
        m["staleness_max"] = float(step - min(versions)) if versions else 0.0
        return m

    # ---- evaluation -------------------------------------------------------------------------
    async def evaluate(self, seeds: list[int] | None = None) -> dict[str, float]:
        """Success rate and component means on held-out seeds (one episode per seed)."""
        from agentrl.rollout import RolloutTask

        seeds = self.cfg.env.eval_seeds if seeds is None else seeds
        tasks = [RolloutTask(env_id=self.cfg.env.id, env_kwargs=self._env_kwargs(), seed=s, group_size=1)
                 for s in seeds]
        manager = self._manager(self.cfg.seed, temperature=self.cfg.rollout.eval_temperature)
        groups = await manager.run(tasks)
        trajs = [t for g in groups for t in g.trajectories]
        self.last_eval = trajs
        out = {"eval/success_rate": float(np.mean([success_of(t.reward_components, self.cfg.env.success_component) for t in trajs])),
               "eval/reward": float(np.mean([t.reward for t in trajs]))}
        for k in sorted({k for t in trajs for k in t.reward_components}):
            out[f"eval/{k}"] = float(np.mean([t.reward_components.get(k, 0.0) for t in trajs]))
        return out

    def warm_start(self) -> dict[str, float]:
        """Supervised warm-start on scripted demonstrations (``cfg.sft``), in place."""
        from agentrl.train.sft import sft

        c = self.cfg.sft
        res = sft(self.model, self.tokenizer, self.cfg.env.id,
                  list(range(c.seed_start, c.seed_start + c.episodes)), env_kwargs=self._env_kwargs(),
                  epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=self.cfg.seed,
                  console=self.console)
        return {"steps": res.steps, "first_loss": res.first_loss, "last_loss": res.last_loss,
                "demos": res.demos, "demo_reward": res.mean_demo_reward, "wall_s": res.wall_s}

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self) -> Path:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        return save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, state,
                               dump_config(self.cfg), keep=self.cfg.train.keep_checkpoints)

    def resume(self) -> bool:
        """Load the newest complete checkpoint in ``out_dir``; False when there is none."""
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None:
            return False
        from safetensors.torch import load_file

        weights = load_file(str(ckpt / "model.safetensors"))
        self.model.load_state_dict(weights, strict=False)
        if self.model.config.tie_word_embeddings:
            self.model.tie_weights()
        state = load_trainer_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        return True

    # ---- the loop ---------------------------------------------------------------------------
    async def _push_weights(self) -> None:
        """Send the new weights to the backend (nothing to copy when it shares the model)."""
        shared = getattr(self.backend, "model", None) is self.model
        await self.backend.update_weights(None if shared else self.model.state_dict(), version=self.step)

    async def afit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``cfg.train.steps`` steps; return a summary with before/after evaluation."""
        cfg = self.cfg
        resumed = resume and self.resume()
        if resumed:
            await self._push_weights()
            self.console.print(f"resumed from step {self.step} in {self.out_dir}")
        logger = MetricsLogger(self.out_dir, resume_step=self.step if resumed else None)
        (self.out_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        summary: dict[str, Any] = {"start_step": self.step}
        t_start = time.perf_counter()
        if not resumed:
            summary["eval_before"] = await self.evaluate()
            logger.log(0, summary["eval_before"])
            if cfg.sft.episodes:
                summary["sft"] = await asyncio.to_thread(self.warm_start)
                await self._push_weights()
                summary["eval_after_sft"] = await self.evaluate()
                logger.log(0, {f"sft/{k}": v for k, v in summary["eval_after_sft"].items()})
        pending: asyncio.Task | None = None
        with TrainProgress(self.console, cfg.train.steps, self.step) as progress:
            while self.step < cfg.train.steps:
                t0 = time.perf_counter()
                if pending is None:
                    pending = asyncio.create_task(self.rollout(self.step))
                groups, roll_stats = await pending
                t_gen = time.perf_counter() - t0
                pending = None
                if cfg.train.mode == "async" and self.step + 1 < cfg.train.steps:
                    pending = asyncio.create_task(self.rollout(self.step + 1))
                adv = self.advantages(groups)
                batch = collate(adv.trajectories, adv.advantages, self.tokenizer.pad_token_id, adv.drop)
                train_m = await asyncio.to_thread(self.train_on, batch)
                self.step += 1
                await self._push_weights()
                metrics = {**self._step_metrics(self.step - 1, groups, adv), **roll_stats, **train_m,
                           "time/rollout_s": t_gen, "time/step_s": time.perf_counter() - t0}
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < cfg.train.steps:
                    metrics.update(await self.evaluate())
                logger.log(self.step, metrics)
                progress.update(self.step, metrics)
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                    self.save()
        if pending is not None:
            pending.cancel()
        summary["eval_after"] = await self.evaluate()
        logger.log(self.step, summary["eval_after"])
        logger.close()
        self.save()
        summary["wall_s"] = time.perf_counter() - t_start
        summary["plot"] = str(plot_metrics(logger.path, self.out_dir / "metrics.png"))
        return summary

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Synchronous entry point (runs its own event loop)."""
        return asyncio.run(self.afit(resume=resume))

    async def aclose(self) -> None:
        await self.backend.close()



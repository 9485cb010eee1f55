"""The TRL half of ``bench/vs_trl.py``: TRL's GRPOTrainer on the shared addition prompts.

Runs inside the TRL virtual environment (``.venv-trl``: torch 2.13.0, trl 1.16.0), never in
agentrl's, and imports nothing from agentrl. ``vs_trl.py`` writes a spec JSON (model folder,
prompts, batch shape, loss settings) and starts::

    .venv-trl/bin/python bench/trl_side.py SPEC.json

which trains for ``spec["steps"]`` optimizer steps and prints one JSON line (prefixed by
``RESULT_PREFIX``) with per-step wall times measured by a ``TrainerCallback``
(``on_step_begin`` -> ``on_step_end``, wall and process CPU seconds), the time spent in ``GRPOTrainer._generate`` per step, the
logged reward and completion length, and the peak RSS of this process.

The reward (:func:`addition_reward`) is stdlib-only so that ``vs_trl.py``'s environment scores
completions with exactly the same function.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import tempfile
import time
from typing import Any

RESULT_PREFIX = "VS_TRL_RESULT "
_INT = re.compile(r"-?\d+")


def addition_reward(completion: str, answer: int) -> float:
    """1.0 when the last integer in ``completion`` equals ``answer``, else 0.0 (nothing else)."""
    found = _INT.findall(completion)
    return float(bool(found) and int(found[-1]) == answer)


def peak_rss_mb() -> dict[str, float]:
    """Peak resident set size of this process and of its largest waited-for child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(own, 1), "children_peak_rss_mb": round(children, 1)}


def _reward_func(completions: list[Any], answer: list[int], **_: Any) -> list[float]:
    """TRL reward function: conversational completions are ``[{"role": "assistant", ...}]``."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [addition_reward(t, a) for t, a in zip(texts, answer, strict=True)]


def _grpo_config(spec: dict[str, Any], out_dir: str) -> Any:
    from trl import GRPOConfig

    b = spec["batch"]
    return GRPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        seed=spec["seed"],
        max_steps=spec["steps"],
        per_device_train_batch_size=b["completions_per_step"],
        gradient_accumulation_steps=1,
        num_generations=b["group_size"],
        max_completion_length=b["max_new_tokens"],
        temperature=b["temperature"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        adam_beta1=spec["betas"][0],
        adam_beta2=spec["betas"][1],
        weight_decay=0.0,
        max_grad_norm=spec["grad_clip"],
        beta=0.0,
        gradient_checkpointing=spec["gradient_checkpointing"],
        shuffle_dataset=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        model_init_kwargs={"dtype": "float32"},
        **spec["trl_loss"],
    )


def _timed_trainer_class() -> Any:
    """GRPOTrainer whose ``_generate`` (tokenize + ``model.generate``) is timed per call."""
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        generate_s: float = 0.0

        def _generate(self, prompts: list) -> Any:
            t0 = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                self.generate_s += time.perf_counter() - t0

    return TimedGRPOTrainer


def _step_timer(trainer_ref: list[Any]) -> Any:
    """A TrainerCallback recording each step's wall time, generate time and logged metrics."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self._t0 = self._cpu0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            trainer_ref[0].generate_s = 0.0
            self._t0, self._cpu0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.steps.append({"step_s": time.perf_counter() - self._t0,
                               "cpu_s": time.process_time() - self._cpu0,
                               "generate_s": trainer_ref[0].generate_s})

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and self.steps and "reward" in logs:
                self.steps[-1]["reward"] = float(logs["reward"])
                self.steps[-1]["completion_tokens"] = float(logs.get("completions/mean_length", 0.0))

    return StepTimer()


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec["steps"]`` steps with TRL's GRPOTrainer; return timings and peak RSS."""
    import torch
    import trl
    from datasets import Dataset

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    rows = [{"prompt": [{"role": "system", "content": p["system"]}, {"role": "user", "content": p["user"]}],
             "answer": p["answer"]} for p in spec["prompts"]]
    with tempfile.TemporaryDirectory(prefix="vs_trl-") as out_dir:
        ref: list[Any] = [None]
        timer = _step_timer(ref)
        trainer = _timed_trainer_class()(
            model=spec["model_dir"], reward_funcs=_reward_func, args=_grpo_config(spec, out_dir),
            train_dataset=Dataset.from_list(rows), callbacks=[timer],
        )
        ref[0] = trainer
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    return {"side": "trl", "versions": {"trl": trl.__version__, "torch": torch.__version__},
            "threads": torch.get_num_threads(), "train_wall_s": round(wall, 2), "steps": timer.steps,
            **peak_rss_mb()}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: trl_side.py SPEC.json  (written by bench/vs_trl.py)")
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    result = run(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

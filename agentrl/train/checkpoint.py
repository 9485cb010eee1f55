"""Atomic checkpoints: a run killed at any moment resumes from the last complete one.

A checkpoint is a folder ``step_000012/`` holding the model (safetensors + tokenizer, loadable
by ``load_model(path)``), ``trainer.pt`` (optimizer, scheduler, RNG states, step, data position)
and ``config.yaml``. It is written into a temporary sibling folder, fsynced, and renamed into
place, so a reader never sees a half-written checkpoint; ``latest_checkpoint`` ignores temporary
folders left by a crash.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STEP_DIR = re.compile(r"^step_(\d{6})$")


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep: int = 2,
) -> Path:
    """Write ``out_dir/checkpoints/step_{step:06d}`` atomically; prune to ``keep`` newest."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:06d}-", dir=root))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save({**trainer_state, "rng": rng_state(), "step": step}, tmp / "trainer.pt")
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(p for p in found if (p / "trainer.pt").is_file())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer.pt", map_location="cpu", weights_only=False)

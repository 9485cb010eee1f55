"""Metrics: JSON lines (always), TensorBoard (when installed), and a PNG plot at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per step to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    On resume the file is truncated to the steps before the resumed step, so a crash between a
    metrics write and a checkpoint never leaves duplicate steps.
    """

    def __init__(self, out_dir: str | Path, resume_step: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tb"))
        except Exception:  # tensorboard is optional
            self._tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def plot_metrics(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot reward components, success rate and loss over steps; None if matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    comps = sorted({k for r in rows for k in r if k.startswith("reward/")})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in comps:
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        axes[0].plot(*zip(*pts, strict=True), marker=".", label=key.removeprefix("reward/"))
    axes[0].set_title("reward components (train, mean per step)")
    axes[0].legend(fontsize=8)
    for key, label in (("success_rate", "train"), ("eval/success_rate", "eval (held-out)")):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), marker="o", label=label)
    sft = [r["sft/eval/success_rate"] for r in rows if r.get("sft/eval/success_rate") is not None]
    if sft:
        axes[1].plot([0], sft[-1:], marker="*", markersize=12, linestyle="", label="eval after SFT warm-start")
    axes[1].set_title("success rate")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].legend(fontsize=8)
    pts = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    if pts:
        axes[2].plot(*zip(*pts, strict=True), marker=".")
    axes[2].set_title("policy loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path

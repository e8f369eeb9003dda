"""Where a run reports what it is doing: metrics.jsonl, TensorBoard scalars, progress bar.

Only process 0 writes (every process computes the same replicated metrics).
``metrics.jsonl`` gets one JSON object per logged step - ``step``, ``loss``, ``lr``,
``grad_norm``, ``steps_per_s`` for training, ``val_loss`` for validation - so runs can be
compared by scripts without TensorBoard. TensorBoard uses tensorboardX (``clu`` would pull
TensorFlow).

A run in a bucket (gs://, s3://) works the same: metrics.jsonl is rewritten whole at each
logged step (an object has no append; the file stays small), and tensorboardX writes its
event files to the bucket itself (through google-cloud-storage / boto3).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from tqdm import tqdm

from gesture_jax import storage
from gesture_jax.storage import Path


class MetricsWriter:
    def __init__(self, workdir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = storage.path(workdir) / "metrics.jsonl"
        self._remote = storage.is_remote(self.path)
        self._text: str | None = None   # a bucket file's contents, kept to rewrite it whole
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.fspath(self.path.parent / "tensorboard"))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _finite(v) for k, v in scalars.items()}, "time": time.time()}
        line = json.dumps(row) + "\n"
        if self._remote:
            if self._text is None:
                self._text = self.path.read_text() if self.path.exists() else ""
            self._text += line
            self.path.write_text(self._text)
        else:
            storage.append_text(self.path, line)
        if self._tb is not None:
            for k, v in scalars.items():
                tag = k if "/" in k else (f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}")
                self._tb.add_scalar(tag, float(v), int(step))

    def truncate_after(self, step: int) -> None:
        """Drop rows beyond ``step`` (a resumed run recomputes them), keeping the file a clean curve."""
        if not self.enabled or not self.path.exists():
            return
        keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        self._text = "".join(l + "\n" for l in keep)
        storage.write_atomic(self.path, self._text)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _finite(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None  # JSON has no NaN; null marks a divergence


class Progress:
    """tqdm bar showing step, loss, steps/s and ETA (tqdm computes ETA from the rate)."""

    def __init__(self, start: int, total: int, enabled: bool = True):
        self.bar = tqdm(total=total, initial=start, disable=not enabled, unit="step",
                        dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int, **postfix: Any) -> None:
        if postfix:  # before update(), which redraws the bar with it
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(n)

    def write(self, msg: str) -> None:
        self.bar.write(msg)

    def close(self) -> None:
        self.bar.close()

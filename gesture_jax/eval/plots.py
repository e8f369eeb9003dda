"""The evaluation figures: speed histograms and BC per file of one run; bar charts comparing runs."""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from gesture_jax import storage
from gesture_jax.storage import Path


def plot_evaluation(path: str | Path, results: Mapping[str, Mapping[str, Any]], speed_edges: np.ndarray,
                    title: str = "") -> Path:
    """Write a two-panel PNG: speed histograms (log density) and per-file BC grouped by set.

    results: set name -> the dict of `metrics.evaluate_set` (uses "speed_hist", "hellinger_speed",
    "per_file" and "bc").
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    centers = 0.5 * (speed_edges[1:] + speed_edges[:-1])
    width = speed_edges[1] - speed_edges[0]
    for name in names:
        h = np.asarray(results[name]["speed_hist"], np.float64)
        dens = np.where(h > 0, h / width, np.nan)
        ax1.plot(centers, dens, drawstyle="steps-mid", lw=2.2 if name in ("model", "ground_truth") else 1.2,
                 label=f"{name} (H={results[name]['hellinger_speed']:.3f})")
    ax1.set_yscale("log")
    ax1.set_xlabel("joint speed (units/s; last bin open-ended)")
    ax1.set_ylabel("density")
    ax1.set_title("speed histograms (Hellinger distance to ground truth)")
    ax1.legend(fontsize=8)

    files = list(next(iter(results.values()))["per_file"]) if names else []
    x = np.arange(len(files))
    w = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        pf = results[name]["per_file"]
        vals = [pf[f]["bc"] if f in pf and np.isfinite(pf[f]["bc"]) else 0.0 for f in files]
        ax2.bar(x + (k - (len(names) - 1) / 2) * w, vals, w, label=f"{name} (set {results[name]['bc']:.3f})")
    ax2.set_xticks(x)
    ax2.set_xticklabels(files, rotation=30, ha="right", fontsize=7)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("beat consistency")
    ax2.set_title("BC per file")
    ax2.legend(fontsize=8)
    return _save(fig, path, title, dpi=110)


def _save(fig, path: str | Path, title: str, dpi: int) -> Path:
    """Title, tight layout, write the PNG (creating its folder), free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = storage.path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    storage.write_atomic(path, buf.getvalue())
    return path


def plot_comparison(path: str | Path, summary: Mapping[str, Mapping[str, Any]], keys: Sequence[str],
                    runs: Sequence[str] = (), title: str = "", columns: int = 4) -> Path:
    """Write a PNG with one bar chart per metric: a bar per set (runs in colour, baselines grey).

    summary: set name -> {metric: value or None}; a missing value is marked "n/a" instead of a bar.
    The ground truth's value, when finite, is a dashed line, since for BC, jerk and diversity the
    target is the real motion's value rather than zero.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.9 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colors = [cmap(runs.index(n) % 10) if n in runs else "0.45" if n == "ground_truth" else "0.75" for n in names]
    x = np.arange(len(names))
    for ax, key in zip(axes.ravel(), keys):
        vals = [summary[n].get(key) for n in names]
        finite = [v is not None and np.isfinite(v) for v in vals]
        ax.bar(x, [v if ok else 0.0 for v, ok in zip(vals, finite)], color=colors)
        for i, ok in enumerate(finite):
            if not ok:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
        gt = summary.get("ground_truth", {}).get(key)
        if gt is not None and np.isfinite(gt):
            ax.axhline(gt, color="0.3", ls="--", lw=0.8)
        ax.set_title(key, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    return _save(fig, path, title, dpi=100)

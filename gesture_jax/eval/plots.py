"""The evaluation figure: speed histograms of every set against ground truth, and BC per file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

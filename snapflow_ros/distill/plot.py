"""``eval.png``: the held-out metrics per method and one example chunk (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"naive_1": "tab:red", "snapflow_1": "tab:green", "snapflow_2": "tab:olive"}
PANELS = (("mse", "MSE (normalised) ↓"), ("cosine", "cosine similarity ↑"),
          ("p95_abs_err", "P95 |error| (normalised) ↓"))


def plot_eval(results: dict[str, dict], example: dict[str, Any], path: Path,
              title: str = "") -> Path:
    """Three bar panels (MSE, cosine, P95) and the first held-out chunk, first two dims."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = list(results)
    colors = [COLORS.get(n, "tab:blue") for n in names]
    fig = plt.figure(figsize=(13, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 6)
    for col, (key, label) in enumerate(PANELS):
        ax = fig.add_subplot(grid[0, 2 * col:2 * col + 2])
        values = [results[n][key] for n in names]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=20)
    truth = example["truth"]
    valid = example.get("valid") or [True] * len(truth)
    steps = [i for i, ok in enumerate(valid) if ok]
    dims = min(2, len(truth[0]))
    for d in range(dims):
        width = 6 // dims
        ax = fig.add_subplot(grid[1, d * width:(d + 1) * width])
        ax.plot(steps, [truth[i][d] for i in steps], "k-", lw=2.5, label="ground truth")
        for name, color in zip(names, colors, strict=True):
            pred = example["pred"][name]
            ax.plot(steps, [pred[i][d] for i in steps], "--", color=color, label=name)
        ax.set_title(f"first held-out chunk, action dim {d} (dataset units)")
        ax.set_xlabel("chunk step")
        ax.legend(fontsize=8)
    n = next(iter(results.values())).get("n_samples", "?")
    fig.suptitle(title or f"held-out evaluation ({n} chunks, same noise for every method)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

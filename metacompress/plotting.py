"""Charts: the HAQ/AMC-style per-layer chart (``inspect --plot``) and the accuracy-target trade-off curve."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_decisions(decisions: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Write a PNG: weight/activation bits per unit (top), kept ratio and cost share (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(decisions))
    width = 0.38
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * len(x) + 2), 6.2), sharex=True)
    top.bar(x - width / 2, decisions["w_bits"], width, label="weight bits", color="#3b6ea8")
    top.bar(x + width / 2, decisions["a_bits"], width, label="activation bits", color="#e39b3b")
    top.set_ylim(0, 9)
    top.set_yticks([2, 4, 6, 8])
    top.set_ylabel("bits")
    top.legend(loc="upper right", ncols=2, fontsize=8)
    top.grid(axis="y", alpha=0.3)
    kept = decisions["kept"] / decisions["channels"]
    bottom.bar(x, kept, 0.6, color="#5a9e5a", label="kept channels (fraction)")
    bottom.plot(x, decisions["cost_share"], "o-", color="#a33b3b", label="share of cost")
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("fraction")
    bottom.legend(loc="upper right", ncols=2, fontsize=8)
    bottom.grid(axis="y", alpha=0.3)
    frozen = decisions["frozen"].astype(bool).to_numpy()
    labels = [f"{n}{' (frozen)' if f else ''}" for n, f in zip(decisions["name"], frozen)]
    bottom.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    if title:
        top.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tradeoff(rows: list[dict], path: str | Path, floor: float, metric: str = "metric") -> Path:
    """Write a PNG of the accuracy-target walk: recovered metric vs cost ratio, the target floor, the chosen plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["cost_ratio"])
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot([r["cost_ratio"] for r in rows], [r["metric"] for r in rows], "o-", color="#3b6ea8", label="plans tried")
    ax.axhline(floor, color="#a33b3b", linestyle="--", label=f"target: {metric} >= {floor:.4g}")
    for r in rows:
        if r["chosen"]:
            ax.plot([r["cost_ratio"]], [r["metric"]], "*", color="#e39b3b", markersize=16, label="returned plan")
    ax.set_xlabel("cost (fraction of the unpruned W8A8 model)")
    ax.set_ylabel(f"recovered {metric} (search split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path

"""The HAQ/AMC-style per-layer chart: bits and kept channels per unit (``inspect --plot``)."""

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

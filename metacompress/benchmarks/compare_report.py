"""What ``bench agents`` concludes from its runs: per-method means with CIs, win-rates, the plot.

Statistics (the README quotes these definitions):

- A 95% confidence interval is Student's t over runs (tasks x seeds), ``mean +- t(0.975,
  n-1) * sd / sqrt(n)``; with one run it is undefined (shown as n/a). Seeds of one task are
  not independent, so the interval is optimistic when seeds agree; it is a yardstick.
- A win-rate of a learned mode against a baseline pairs runs by (task, seed): a higher
  final accuracy change wins 1, an equal one 0.5, a lower one 0; the rate is the mean
  over the pairs both methods ran. ``mean diff`` is the learned mode's final change minus
  the baseline's, over the same pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from metacompress.agents.registry import parse_method, policy_label

CONFIDENCE = 0.95
TIE_TOLERANCE = 1e-9  # accuracy changes closer than this are equal (one test sample is >= 1e-4)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width of the t confidence interval); the half-width is NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def method_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per method, in the order methods first appear in ``frame``."""
    rows = []
    for method, group in frame.groupby("method", sort=False):
        proxy, proxy_ci = mean_ci(group["proxy_change"])
        final, final_ci = mean_ci(group["final_change"])
        rows.append({
            "method": method, "runs": len(group), "proxy_change": proxy, "proxy_ci95": proxy_ci,
            "final_change": final, "final_ci95": final_ci, "budget_satisfied": float(group["budget_satisfied"].mean()),
            "evaluations": float(group["evaluations_used"].mean()), "planning_seconds": float(group["planning_seconds"].mean()),
            "finetune_seconds": float(group["finetune_seconds"].mean()),
        })
    return pd.DataFrame(rows)


def _rank(novelty: str) -> tuple[int, str]:
    """Novelties in the suite's order (family, hardware, budget), anything else after."""
    order = ("family", "hardware", "budget")
    return (order.index(novelty), "") if novelty in order else (len(order), str(novelty))


def _is_learned(method: str) -> bool:
    return parse_method(method).learned


def win_rates(frame: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Win-rate of every learned mode against every baseline on final change, paired by (task, seed).

    Args:
        frame: the results (columns ``task``, ``seed``, ``method``, ``final_change``, and ``by``).
        by: a column to split the pairs by (e.g. ``novelty``), or None.

    Returns:
        Columns learned, baseline, [by], pairs, win_rate, mean_diff; only pairs both ran.
    """
    methods = list(dict.fromkeys(frame["method"]))
    wide = frame.pivot_table(index=["task", "seed"] + ([by] if by else []), columns="method", values="final_change", aggfunc="first")
    rows = []
    for learned in (m for m in methods if _is_learned(m)):
        for baseline in (m for m in methods if not _is_learned(m)):
            both = wide[[learned, baseline]].dropna()
            groups = sorted(both.groupby(level=by), key=lambda g: _rank(g[0])) if by else [(None, both)]
            for value, pairs in groups:
                diff = pairs[learned] - pairs[baseline]
                score = np.where(diff.abs() <= TIE_TOLERANCE, 0.5, (diff > 0).astype(float))
                rows.append({
                    "learned": learned, "baseline": baseline, **({by: value} if by else {}), "pairs": len(pairs),
                    "win_rate": float(score.mean()) if len(pairs) else float("nan"),
                    "mean_diff": float(diff.mean()) if len(pairs) else float("nan"),
                })
    return pd.DataFrame(rows, columns=["learned", "baseline", *([by] if by else []), "pairs", "win_rate", "mean_diff"])


def _paired_mean_diff(frame: pd.DataFrame, a: str, b: str) -> tuple[float, int]:
    wide = frame.pivot_table(index=["task", "seed"], columns="method", values="final_change", aggfunc="first")
    if a not in wide or b not in wide:
        return float("nan"), 0
    both = wide[[a, b]].dropna()
    return float((both[a] - both[b]).mean()) if len(both) else float("nan"), len(both)


def target_lines(frame: pd.DataFrame) -> list[str]:
    """The issue's bars, checked on paired runs; a bar whose methods did not run is reported as such."""
    lines = []
    satisfied = frame.groupby("method", sort=False)["budget_satisfied"].mean()
    bad = [f"{m} {v:.0%}" for m, v in satisfied.items() if v < 1.0]
    lines.append(f"- budget satisfied in 100% of runs, every method: {'yes' if not bad else 'NO (' + ', '.join(bad) + ')'}")
    few_shot = [m for m in dict.fromkeys(frame["method"]) if m.startswith("few-shot-")]
    # (method, baseline, what, test on the paired mean difference in accuracy change)
    checks = [("zero-shot", "uniform", "mean final change above the best uniform setting's", lambda d: d > 0)]
    checks += [(m, b, f"mean final change at least {b}'s", lambda d: d >= 0) for m in few_shot for b in ("ddpg-300", "random-300")]
    checks += [(m, "oracle-evolution-2000", "within 1 point of the oracle's", lambda d: d >= -0.01) for m in few_shot]
    for a, b, what, met in checks:
        diff, pairs = _paired_mean_diff(frame, a, b)
        if pairs == 0:
            lines.append(f"- {a}: {what}: not measured ({a} and {b} share no (task, seed))")
        else:
            lines.append(f"- {a}: {what}: {'yes' if met(diff) else 'NO'} (paired mean diff {diff * 100:+.2f} points over {pairs} runs)")
    hawq = win_rates(frame[frame["method"].isin(["zero-shot", "hawq"])])
    if len(hawq) and hawq["pairs"].iloc[0]:
        rate = hawq["win_rate"].iloc[0]
        lines.append(f"- zero-shot: win-rate >= 60% against hawq: {'yes' if rate >= 0.6 else 'NO'} ({rate:.1%} over {hawq['pairs'].iloc[0]} pairs)")
    else:
        lines.append("- zero-shot: win-rate >= 60% against hawq: not measured")
    return lines


def _pm(mean: float, half: float, scale: float = 100.0) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean * scale:+.2f} ± {half * scale:.2f}" if not np.isnan(half) else f"{mean * scale:+.2f} ± n/a"


def summary_table(summary: pd.DataFrame) -> str:
    """The per-method table (markdown; accuracy changes in points, i.e. percent of the test split)."""
    shown = pd.DataFrame({
        "method": summary["method"], "runs": summary["runs"],
        "proxy change (pts, 95% CI)": [_pm(m, h) for m, h in zip(summary["proxy_change"], summary["proxy_ci95"])],
        "final change (pts, 95% CI)": [_pm(m, h) for m, h in zip(summary["final_change"], summary["final_ci95"])],
        "budget satisfied": [f"{v:.0%}" for v in summary["budget_satisfied"]],
        "evaluations": [f"{v:.1f}" for v in summary["evaluations"]],
        "planning s": [f"{v:.1f}" for v in summary["planning_seconds"]],
        "fine-tune s": [f"{v:.1f}" for v in summary["finetune_seconds"]],
    })
    return shown.to_markdown(index=False)


def _win_table(rates: pd.DataFrame, by: str | None) -> str:
    if rates.empty:
        return "(no learned mode and baseline ran on common (task, seed) pairs)"
    cell = [f"{w:.0%} ({p}; {d * 100:+.2f})" if p else "-" for w, p, d in zip(rates["win_rate"], rates["pairs"], rates["mean_diff"])]
    table = rates.assign(cell=cell).pivot_table(
        index=["learned"] + ([by] if by else []), columns="baseline", values="cell", aggfunc="first", sort=False
    )
    return table.reset_index().to_markdown(index=False)


def summary_markdown(frame: pd.DataFrame, command: str, notes: Sequence[str], header: Sequence[str]) -> str:
    """The ``summary.md`` of a run: the command, notes, per-method table, win-rates, targets."""
    summary = method_summary(frame)
    lines = [
        "# bench agents", "", "Produced by:", "", f"    {command}", "",
        *[f"- {h}" for h in header], *[f"- note: {n}" for n in notes], "",
        "## Per method", "",
        "Accuracy changes in points (1 point = 1% of the split); proxy = search split, final = test split after the "
        "final KD fine-tune; 95% CI = t over runs (tasks x seeds); evaluations = distinct plans scored; planning s = "
        "wall time of the planner (cold proxy cache; zero-shot's includes scoring its plan for the proxy column); fine-tune s = the final fine-tune of its plan.", "",
        summary_table(summary), "",
        "## Win-rate of each learned mode against each baseline", "",
        "Final accuracy change, paired by (task, seed); ties count half. Cell: win-rate (pairs; mean diff in points).", "",
        _win_table(win_rates(frame), None), "",
        "### By novelty", "",
        _win_table(win_rates(frame, by="novelty"), "novelty"), "",
        "## Targets (issue 7)", "",
        *target_lines(frame), "",
    ]
    return "\n".join(lines)


def plot_accuracy_vs_evaluations(frame: pd.DataFrame, path: str | Path) -> Path:
    """Mean final accuracy change vs mean evaluations used, one point per method, CI error bars.

    The x axis is symmetric-log (linear below 1) so that zero-shot's 0 evaluations shows;
    the legend gives each method's run count (preset limits run some on fewer tasks).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = method_summary(frame)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    colors = plt.get_cmap("tab20").colors
    for i, row in enumerate(summary.itertuples()):
        ax.errorbar(row.evaluations, row.final_change * 100, yerr=0 if np.isnan(row.final_ci95) else row.final_ci95 * 100,
                    fmt="o" if _is_learned(row.method) else "s", color=colors[i % len(colors)], capsize=3,
                    label=f"{row.method} ({row.runs} runs)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("proxy evaluations used (mean; symlog)")
    ax.set_ylabel("final test accuracy change (points)")
    ax.set_title("final accuracy vs evaluations (circles: learned, squares: baselines; bars: 95% CI)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _header(bench, seconds: float) -> list[str]:
    from metacompress._version import __version__
    from metacompress.envs.compression_env import ENV_VERSION
    from metacompress.envs.world import DEFAULT_SEARCH_FINETUNE_STEPS

    counts = pd.Series([t.novelty or "(train)" for t in bench.tasks]).value_counts().to_dict()
    return [
        f"preset {bench.config.preset}, split {bench.config.split}: {len(bench.tasks)} tasks "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())}), seeds {', '.join(map(str, bench.seeds))}, {len(bench.runs)} runs",
        f"final fine-tune: {bench.finetune_steps} KD steps on the train split, seeded by the run's seed, then test-split accuracy; "
        f"proxy: search split after {DEFAULT_SEARCH_FINETUNE_STEPS} KD steps (calibration only when 0)",
        f"wall time {seconds / 60:.1f} min with {bench.workers} worker(s) (estimated {bench.estimated_seconds / 60:.0f} min); "
        f"metacompress {__version__}, env version {ENV_VERSION}",
        "policies: " + ", ".join(f"{which} {policy_label(path)}" for which, path in bench.config.policies.items() if path is not None),
    ]


def write_run(out: Path, bench, frame: pd.DataFrame, seconds: float, overwrite: bool = False) -> str:
    """Write ``results.csv``, ``summary.md``, ``accuracy_vs_evaluations.png`` and ``config.json`` atomically.

    Args:
        out: the run folder (created via a temporary sibling, then renamed).
        bench: the ``compare.BenchPlan`` that produced ``frame``.
        frame: the results.
        seconds: wall seconds of the whole run.
        overwrite: replace an existing folder.

    Returns:
        The summary markdown.

    Raises:
        RunExists: if ``out`` exists and ``overwrite`` is False.
    """
    import json

    from metacompress._version import __version__
    from metacompress.compressors.io import atomic_directory
    from metacompress.envs.compression_env import ENV_VERSION

    command = bench.command(out)
    summary = summary_markdown(frame, command, bench.notes, _header(bench, seconds))
    record = {
        "command": command, "preset": bench.config.preset, "split": bench.config.split,
        "methods": [m.name for m in bench.methods], "evaluations": {m.name: m.evaluations for m in bench.methods},
        "seeds": list(bench.seeds), "tasks": [t.to_dict() for t in bench.tasks], "finetune_steps": bench.finetune_steps,
        "workers": bench.workers, "limits": bench.config.limits, "notes": list(bench.notes),
        "policies": {k: str(v) if v else None for k, v in vars(bench.config.policies).items()},
        "seconds": seconds, "metacompress_version": __version__, "env_version": ENV_VERSION,
    }
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        frame.to_csv(tmp / "results.csv", index=False)
        (tmp / "summary.md").write_text(summary)
        (tmp / "config.json").write_text(json.dumps(record, indent=2))
        plot_accuracy_vs_evaluations(frame, tmp / "accuracy_vs_evaluations.png")
    return summary


def runs_table(bench) -> str:
    """The ``--dry-run`` listing: one line per run with its estimated seconds (single worker)."""
    lines = [f"{'#':>4}  {'novelty':<8}  {'task':<58}  {'method':<22}  {'seed':>4}  {'est. s':>7}"]
    for run in bench.runs:
        seconds = bench.run_seconds(run)
        lines.append(f"{run.order:>4}  {run.entry.novelty:<8}  {run.entry.task.id:<58}  {run.method.name:<22}  {run.seed:>4}  {seconds:7.1f}")
    return "\n".join(lines)

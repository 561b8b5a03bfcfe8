"""``metacompress inspect RUN``: the per-unit decisions of an apply run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS = ["unit", "name", "kind", "kept", "channels", "prune_ratio", "w_bits", "a_bits", "params", "macs", "cost_share", "sensitivity"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show the per-unit decisions of an apply run (table, CSV, JSON, plot)",
        epilog="example: metacompress inspect runs/apply-mobilenetv2-w8-d1-digits-s0 --plot decisions.png",
    )
    parser.add_argument("run", help="folder written by `metacompress apply`")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default table)")
    parser.add_argument("--plot", default=None, help="also write a PNG chart of bits and kept channels per unit")
    parser.set_defaults(handler=_inspect)


SUMMARY_KEYS = ("model", "hardware", "budget", "budget_ratio", "test_accuracy_original", "test_accuracy_compressed")


def _inspect(args: argparse.Namespace) -> int:
    from metacompress.errors import MetacompressError
    from metacompress.compressors.runs import check_writable

    run = Path(args.run)
    table, summary_path = run / "decisions.csv", run / "summary.json"
    if not table.exists() or not summary_path.exists():
        raise MetacompressError(f"{run} is not an apply run (needs decisions.csv and summary.json); run `metacompress apply` first")
    if args.plot:
        check_writable(args.plot, "--plot")
    summary = _read_summary(summary_path)
    decisions = _read_table(table)
    if args.format == "csv":
        print(decisions.to_csv(index=False), end="")
    elif args.format == "json":
        print(decisions.to_json(orient="records", indent=2))
    else:
        print(f"{summary['model']} on {summary['hardware']}, budget {summary['budget']}: cost {summary['budget_ratio']:.3f} of budget, "
              f"test accuracy {summary['test_accuracy_original']:.4f} -> {summary['test_accuracy_compressed']:.4f}")
        print(decisions[TABLE_COLUMNS].to_string(index=False))
    if args.plot:
        from metacompress.plotting import plot_decisions

        title = f"{summary['model']} on {summary['hardware']} ({summary['budget']})"
        print(f"wrote {plot_decisions(decisions, args.plot, title)}")
    return 0


def _read_summary(path: Path) -> dict:
    """``summary.json`` with the keys ``inspect`` prints, or a ``CorruptFile`` naming what is wrong."""
    from metacompress.errors import CorruptFile

    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFile(f"{path} is corrupt ({exc}); re-run `metacompress apply` to rewrite the run") from exc
    missing = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
    if missing:
        raise CorruptFile(f"{path} lacks {', '.join(missing)}; re-run `metacompress apply` to rewrite the run")
    return summary


def _read_table(path: Path) -> "pd.DataFrame":
    """``decisions.csv`` with the columns ``inspect`` prints, or a ``CorruptFile``."""
    from metacompress.errors import CorruptFile
    from metacompress.report import read_decisions

    try:
        decisions = read_decisions(path)
    except (OSError, ValueError) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise CorruptFile(f"{path} is corrupt ({exc}); re-run `metacompress apply` to rewrite the run") from exc
    missing = [column for column in TABLE_COLUMNS if column not in decisions.columns]
    if missing:
        raise CorruptFile(f"{path} lacks columns {', '.join(missing)}; re-run `metacompress apply` to rewrite the run")
    return decisions

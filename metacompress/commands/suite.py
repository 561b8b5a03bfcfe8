"""``metacompress suite list``: the tasks of the default suite, by split."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    suite = subparsers.add_parser("suite", help="the task suite (model x hardware x budget) and its held-out split")
    actions = suite.add_subparsers(dest="suite_action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="print the tasks of a split",
        epilog="example: metacompress suite list --split heldout",
    )
    listing.add_argument("--split", choices=["train", "heldout"], default=None, help="only this split (default: both)")
    listing.add_argument("--format", choices=["table", "csv"], default="table", help="output format (default table)")
    listing.add_argument("--seed", type=int, default=0, help="suite generator seed (default 0: the default suite)")
    listing.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    from metacompress.envs.suite import SuiteConfig, default_suite

    frame = default_suite(SuiteConfig(seed=args.seed)).to_frame(args.split)
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
        return 0
    print(frame.to_string(index=False))
    counts = frame.groupby(["split", "novelty"]).size()
    print("\n" + ", ".join(f"{split}{'/' + novelty if novelty else ''}: {n}" for (split, novelty), n in counts.items()))
    return 0

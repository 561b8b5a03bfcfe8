"""``metacompress zoo build|list``: train and cache the model zoo, and show what it holds."""

from __future__ import annotations

import argparse
import math
import time

from metacompress.commands.executor_flags import add_executor_flags, check_executor_flags, executor_from
from metacompress.errors import MetacompressError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``zoo build`` and ``zoo list`` to the CLI."""
    zoo = subparsers.add_parser(
        "zoo",
        help="train, cache and list the model zoo",
        description="The model zoo: trained models of six families, and procedurally generated networks, that the agent learns to compress.",
    )
    actions = zoo.add_subparsers(dest="zoo_action", required=True, metavar="ACTION")

    build = actions.add_parser(
        "build",
        help="train the models the cache lacks (resumable; verifies cached files)",
        description="Train and cache zoo models. Cached models are skipped after a hash check, so an "
        "interrupted build resumes where it stopped.",
        epilog="example: metacompress zoo build --quick   (then: metacompress zoo build --all, --generated 200)",
    )
    which = build.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="the quick subset: one small model per family")
    which.add_argument("--all", action="store_true", help="every model of the zoo")
    which.add_argument("--generated", type=int, metavar="N", default=None,
                       help="generated networks 0..N-1 (envs/zoo/generator.py); one below its floor is cached and "
                       "reported as skipped, not an error")
    build.add_argument("ids", nargs="*", metavar="ID", help="zoo ids to build, e.g. resnet-w16-d2-mnist")
    build.add_argument("--force", action="store_true", help="retrain and overwrite models that are already cached")
    add_executor_flags(build, "models trained at once (default 1)")
    build.add_argument("--seed", type=int, default=None,
                       help="build every selected model with this seed; ids get -s<seed> (default: each entry's own seed, 0)")
    _add_cache_flag(build)
    build.set_defaults(handler=run_build)

    listing = actions.add_parser(
        "list",
        help="table of the zoo: id, family, dataset, params, MACs, test accuracy, cached?",
        epilog="example: metacompress zoo list --format csv > zoo.csv",
    )
    listing.add_argument("--format", choices=["table", "csv"], default="table", help="output format (default: %(default)s)")
    shown = listing.add_mutually_exclusive_group()
    shown.add_argument("--quick", action="store_true", help="only the quick subset")
    shown.add_argument("--generated", type=int, nargs="?", const=200, metavar="N", default=None,
                       help="the generated networks 0..N-1 instead (N default: %(const)s)")
    _add_cache_flag(listing)
    listing.set_defaults(handler=run_list)


def _add_cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="zoo folder (default: $METACOMPRESS_CACHE/zoo, else ~/.cache/metacompress/zoo)")


def _selected(args: argparse.Namespace):
    from metacompress.envs.zoo.catalog import QUICK, ZOO, get_entry, reseed
    from metacompress.envs.zoo.generator import generated_entries

    chosen = args.quick or args.all or args.generated is not None
    if args.ids and chosen:
        raise MetacompressError("give either ids or --quick/--all/--generated N, not both")
    if not (args.ids or chosen):
        raise MetacompressError("say which models to build: --quick, --all, or zoo ids (see `metacompress zoo list`), or --generated N")
    if args.generated is not None and args.generated < 1:
        raise MetacompressError(f"--generated N needs N >= 1, got {args.generated}")
    entries = (
        QUICK if args.quick else ZOO if args.all
        else generated_entries(args.generated) if args.generated is not None
        else [get_entry(i) for i in args.ids]
    )
    return [reseed(e, args.seed) for e in entries] if args.seed is not None else list(entries)


def run_build(args: argparse.Namespace) -> int:
    from metacompress.envs.zoo.cache import build_zoo, cached_record, default_cache_dir
    from metacompress.envs.zoo.generator import accuracy_floor, meets_floor

    check_executor_flags(args)
    entries = _selected(args)
    cache = args.cache or default_cache_dir()
    was_cached = 0 if args.force else sum(cached_record(e, cache) is not None for e in entries)
    start = time.perf_counter()
    executor = executor_from(args)
    try:
        records = build_zoo(entries, cache, progress=True, force=args.force, executor=executor)
    finally:
        executor.close()
    wall = time.perf_counter() - start
    print(f"{'id':<30} {'params':>9} {'MACs':>11} {'test acc':>9} {'floor':>6} {'train s':>8}")
    for r in records:
        print(f"{r.entry.id:<30} {r.params:>9,} {r.macs:>11,} {r.test_accuracy:>9.4f} "
              f"{accuracy_floor(r.entry):>6.2f} {r.train_seconds:>8.1f}" + ("" if meets_floor(r) else "  skipped: below its floor"))
    skipped = sum(not meets_floor(r) for r in records)
    print(f"\n{len(records)} models ready in {cache}: {len(records) - was_cached} trained, {was_cached} already cached; "
          f"total wall time {wall:.1f} s" + (f"; {skipped} generated below their floor, skipped for training" if skipped else ""))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from metacompress.envs.zoo import QUICK, ZOO, generated_entries, zoo_table

    if args.generated is not None and args.generated < 1:
        raise MetacompressError(f"--generated N needs N >= 1, got {args.generated}")
    entries = QUICK if args.quick else generated_entries(args.generated) if args.generated is not None else ZOO
    frame = zoo_table(entries, args.cache)
    frame = frame[["id", "family", "dataset", "params", "macs", "test_accuracy", "cached"]]
    if args.format == "csv":
        print(frame.to_csv(index=False), end="")
        return 0
    print(f"{'id':<28} {'family':<12} {'dataset':<8} {'params':>9} {'MACs':>11} {'test acc':>9} cached")
    for row in frame.itertuples():
        accuracy = "-" if math.isnan(row.test_accuracy) else f"{row.test_accuracy:.4f}"  # NaN: not cached
        print(f"{row.id:<28} {row.family:<12} {row.dataset:<8} {row.params:>9,} {row.macs:>11,} {accuracy:>9} "
              f"{'yes' if row.cached else 'no'}")
    print(f"\n{len(frame)} models, {int(frame['cached'].sum())} cached")
    return 0

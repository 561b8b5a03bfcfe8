"""``metacompress bench ...``: benchmarks whose output the README and closing notes quote."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark (core speed, env speed, policy quality)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    core = kinds.add_parser(
        "core",
        help="latency of a 50%%-channel export vs the original, and search-mode evaluation cost",
        epilog="example: metacompress bench core --seed 0",
    )
    core.add_argument("--seed", type=int, default=0, help="seed of the model weights and data (default 0)")
    core.add_argument("--width", type=int, default=32, help="ResNet stage-1 channels (default 32)")
    core.add_argument("--batch", type=int, default=64, help="batch size for latency (default 64)")
    core.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, steadiest numbers)")
    core.add_argument("--repeats", type=int, default=7, help="timed repeats; the median is reported (default 7)")
    core.add_argument("--json", action="store_true", help="print the result as JSON")
    core.set_defaults(handler=_core)


def _core(args: argparse.Namespace) -> int:
    from metacompress.benchmarks.core import CoreBenchConfig, run_core_bench

    config = CoreBenchConfig(width=args.width, batch=args.batch, threads=args.threads, repeats=args.repeats, seed=args.seed)
    result = run_core_bench(config)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"ResNet-style CNN (width {config.width}, depth {config.depth}, 1x{config.image}x{config.image}), "
          f"{config.threads} thread(s), batch {config.batch}, median of {config.repeats}")
    print(f"  params                       {result.params_original:>10,} -> {result.params_pruned:,} at 50% channels")
    print(f"  latency original             {result.latency_original_ms:10.2f} ms")
    print(f"  latency exported, 50% chan.  {result.latency_pruned_ms:10.2f} ms   speedup {result.speedup:.2f}x (target >= 1.6x)")
    print(f"  same, fake quantizers on     {result.latency_pruned_simulated_ms:10.2f} ms   (simulation overhead, not deployment)")
    print(f"  forward, {config.search_samples} search samples  {result.forward_search_split_ms:10.1f} ms")
    print(f"  one search-mode evaluation   {result.search_evaluation_ms:10.1f} ms   = {result.evaluation_over_forward:.2f}x a forward pass (target <= 2x)")
    return 0

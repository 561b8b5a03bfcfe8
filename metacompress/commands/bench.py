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

    env = kinds.add_parser(
        "env",
        help="episodes per second and the env's own overhead share on reference tasks",
        epilog="example: metacompress bench env --episodes 40 --seed 0",
    )
    env.add_argument("--episodes", type=int, default=40, help="random-action episodes per task (default 40)")
    env.add_argument("--seed", type=int, default=0, help="action seed (default 0)")
    env.add_argument("--search-finetune-steps", type=int, default=None, help="KD steps per evaluation (default: the env default)")
    env.set_defaults(handler=_env)

    fidelity = kinds.add_parser(
        "fidelity",
        help="Spearman correlation of the proxy with the final fine-tuned test accuracy, per recovery setting",
        epilog="example: metacompress bench fidelity --plans 50 --seed 0",
    )
    fidelity.add_argument("--plans", type=int, default=20, help="random plans per model (default 20: 60 over the three models)")
    fidelity.add_argument("--final-steps", type=int, default=200, help="KD steps of the final fine-tune (default 200)")
    fidelity.add_argument("--seed", type=int, default=0, help="seed of the random plans (default 0)")
    fidelity.set_defaults(handler=_fidelity)


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


def _env(args: argparse.Namespace) -> int:
    import torch

    from metacompress.benchmarks.env import run_env_bench, summarize

    torch.set_num_threads(1)
    rows = run_env_bench(args.episodes, args.seed, args.search_finetune_steps)
    print(f"{'task':<58} {'units':>5} {'eps/s':>7} {'steps/s':>8} {'eval ms':>8} {'overhead':>9}")
    for r in rows:
        print(f"{r.task:<58} {r.units:>5} {r.episodes_per_second:7.2f} {r.steps_per_second:8.1f} {r.ms_per_evaluation:8.1f} {r.overhead_share:9.1%}")
    total = summarize(rows)
    print(f"mean: {total['episodes_per_second']:.2f} episodes/s per core, env overhead {total['overhead_share']:.1%} of episode time (target <= 25%)")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from metacompress.benchmarks.fidelity import FIDELITY_MODELS, run_fidelity

    torch.set_num_threads(1)
    bar = tqdm(total=args.plans * len(FIDELITY_MODELS), desc="final fine-tunes")
    rows = run_fidelity(plans_per_model=args.plans, final_steps=args.final_steps, seed=args.seed, progress=lambda: bar.update())
    bar.close()
    print(f"{'model':<24} {'plans':>5} {'KD steps in proxy':>17} {'spearman':>9} {'ms/eval':>8} {'final acc':>9}")
    for r in rows:
        print(f"{r.model:<24} {r.plans:>5} {r.search_finetune_steps:>17} {r.spearman:9.3f} {r.ms_per_evaluation:8.1f} {r.final_mean:9.3f}")
    by_steps: dict[int, list[float]] = {}
    for r in rows:
        by_steps.setdefault(r.search_finetune_steps, []).append(r.spearman)
    print("mean spearman: " + ", ".join(f"{k} KD steps {sum(v) / len(v):.3f}" for k, v in by_steps.items()))
    return 0

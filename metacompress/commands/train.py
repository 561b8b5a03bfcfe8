"""``metacompress train``: meta-train a policy on the task suite."""

from __future__ import annotations

import argparse
from dataclasses import replace

from metacompress.agents.train_config import METHODS, PREDICTOR_METHODS, RECIPES
from metacompress.commands.executor_flags import add_executor_flags, check_executor_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="meta-train a compression policy on the task suite",
        epilog="example: metacompress train --preset quick --seed 0 --out runs/train-quick-s0",
    )
    parser.add_argument("--algo", choices=list(METHODS), default="ppo",
                        help="ppo: zero-shot task-conditioned PPO; rl2: RecurrentPPO on K-attempt trials; "
                             "residual: PPO correcting the exact solver's plan, whole-network encoder; reptile, maml (first-order), "
                             "meta-sgd, meta-curvature: meta-learn the residual policy's head for few-shot adaptation; relation, prototypical: "
                             "fit a predictor of unit option tables, the scores of hawq-relation / hawq-proto (default ppo)")
    parser.add_argument("--preset", choices=sorted(RECIPES), default="default", help="recipe: default (the shipped policy's) or quick (minutes)")
    parser.add_argument("--split", choices=["train"], default="train", help="suite split to train on (held-out tasks are only monitored)")
    parser.add_argument("--config", default=None,
                        help="JSON file of TrainConfig fields (agents/training.py) applied over the preset; --timesteps and --n-envs "
                             "apply over it, and algo, seed and split always come from their flags")
    parser.add_argument("--timesteps", type=int, default=None, help="environment steps (one per unit decision); overrides the preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of task sampling, envs and networks (default 0)")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel environments (default 2)")
    parser.add_argument("--out", default=None, help="run folder (default runs/train-<preset>-<algo>-s<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing train run (never a folder that is not one); the old run stays until the new one has a checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_executor_flags(parser, "parallel environments, as --n-envs (default 2); with --executor ray each is a Ray actor")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    import torch

    from metacompress.agents.train_config import TrainConfig
    from metacompress.agents.training import train
    from metacompress.compressors.runs import config_from_file

    torch.set_num_threads(1)
    config = TrainConfig.recipe(args.preset, args.algo)
    if args.config:
        config = config_from_file(args.config, config)
    check_executor_flags(args, default_workers=2)
    vec_env = {"inprocess": "dummy", "process": "subproc", "ray": "ray", None: None}[args.executor or ("ray" if args.ray_address else None)]
    flags = {"algo": args.algo, "seed": args.seed, "split": args.split, "timesteps": args.timesteps,
             "n_envs": args.n_envs or args.workers, "vec_env": vec_env}
    config = replace(config, **{name: value for name, value in flags.items() if value is not None})
    out = args.out or f"runs/train-{args.preset}-{args.algo}-s{args.seed}"
    result = train(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                   ray_address=args.ray_address)
    if config.algo in PREDICTOR_METHODS:
        if result.trained == 0:
            print(f"{result.out} is already complete; nothing to fit -> {result.policy_path}")
            return 0
        record = result.final_monitor
        print(f"fitted a {config.algo} predictor on {record['units']} units of {len(record['models'])} models "
              f"({', '.join(record['models'])}) in {result.seconds / 60:.1f} min (tables {record['tables_seconds']:.0f} s) "
              f"-> {result.policy_path}")
        method = "hawq-relation" if config.algo == "relation" else "hawq-proto"
        print(f"next: metacompress apply --method {method} --policy {result.policy_path} --model mobilenetv2-w8-d1-digits")
        return 0
    if result.trained == 0:
        print(f"{result.out} is already complete at {result.timesteps:,} steps; nothing to train -> {result.policy_path}")
        return 0
    monitor = result.final_monitor
    resumed = f" (resumed; {result.timesteps:,} in all)" if result.trained != result.timesteps else ""
    print(f"trained {result.trained:,} steps{resumed} in {result.seconds / 60:.1f} min -> {result.policy_path}")
    split = "validation" if config.validation_families else "heldout"
    if monitor:
        gain = f", gain over the solver's plan {monitor[f'{split}_gain']:+.4f}" if f"{split}_gain" in monitor else ""
        print(f"{split} zero-shot ({'picked the checkpoint' if split == 'validation' else 'monitoring'}): accuracy change "
              f"{monitor[f'{split}_accuracy_change']:+.4f}, budget used {monitor[f'{split}_budget_ratio']:.3f}{gain}")
    if "chosen_timesteps" in monitor:
        print(f"kept the checkpoint at {monitor['chosen_timesteps']:,} steps: best validation score "
              f"{monitor[f'chosen_{split}_score']:+.4f} (gain over the solver's plan on the proxy)")
    print(f"next: metacompress apply --policy {result.policy_path} --model mobilenetv2-w8-d1-digits")
    return 0

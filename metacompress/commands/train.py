"""``metacompress train``: meta-train a policy on the task suite."""

from __future__ import annotations

import argparse
from dataclasses import replace

PRESETS = {
    # The shipped default policy's recipe: the train split (models <= 3M MACs), ~55 min on 2 cores.
    "default": {},
    # The README tour: the quick zoo's training families, a few minutes.
    "quick": {
        "timesteps": 6_000,
        "models": ("mlp-w64-d1-digits", "cnn1d-w16-d2-mnist1d", "vgg-w8-d1-digits", "resnet-w8-d1-digits"),
        "eval_every": 2_000,
        "checkpoint_every": 2_000,
        "eval_tasks": 4,
    },
}


# The few-shot agents' recipes under --preset default: smaller budgets (RecurrentPPO's
# learner is ~10x slower per step; Reptile runs its inner loops in one process).
ALGO_DEFAULTS = {
    "rl2": {"timesteps": 60_000, "n_envs": 1, "attempts": 8},
    "reptile": {"timesteps": 300_000},
    # the solver-anchored residual planner: vgg tasks of the train split are its validation split
    "residual": {"timesteps": 60_000, "validation_families": ("vgg",), "log_std_init": -1.5, "eval_every": 5_000, "eval_tasks": 12},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="meta-train a compression policy on the task suite",
        epilog="example: metacompress train --preset quick --seed 0 --out runs/train-quick-s0",
    )
    parser.add_argument("--algo", choices=["ppo", "rl2", "reptile", "residual"], default="ppo",
                        help="ppo: zero-shot task-conditioned PPO; rl2: RecurrentPPO on K-attempt trials; reptile: meta-learned init; "
                             "residual: PPO correcting the exact solver's plan, whole-network encoder (default ppo)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="recipe: default (the shipped policy's) or quick (minutes)")
    parser.add_argument("--split", choices=["train"], default="train", help="suite split to train on (held-out tasks are only monitored)")
    parser.add_argument("--timesteps", type=int, default=None, help="environment steps (one per unit decision); overrides the preset")
    parser.add_argument("--seed", type=int, default=0, help="seed of task sampling, envs and networks (default 0)")
    parser.add_argument("--n-envs", type=int, default=None, help="parallel environments (default 2)")
    parser.add_argument("--out", default=None, help="run folder (default runs/train-<preset>-<algo>-s<seed>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    import torch

    from metacompress.agents.training import TrainConfig, train

    torch.set_num_threads(1)
    recipe = {**(ALGO_DEFAULTS.get(args.algo, {}) if args.preset == "default" else {}), **PRESETS[args.preset]}
    config = replace(TrainConfig(), algo=args.algo, seed=args.seed, split=args.split, **recipe)
    if args.timesteps is not None:
        config = replace(config, timesteps=args.timesteps)
    if args.n_envs is not None:
        config = replace(config, n_envs=args.n_envs)
    out = args.out or f"runs/train-{args.preset}-{args.algo}-s{args.seed}"
    result = train(config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    monitor = result.final_monitor
    print(f"trained {result.timesteps:,} steps in {result.seconds / 60:.1f} min -> {result.policy_path}")
    split = "validation" if config.validation_families else "heldout"
    if monitor:
        gain = f", gain over the solver's plan {monitor[f'{split}_gain']:+.4f}" if f"{split}_gain" in monitor else ""
        print(f"{split} zero-shot ({'picked the checkpoint' if split == 'validation' else 'monitoring'}): accuracy change "
              f"{monitor[f'{split}_accuracy_change']:+.4f}, budget used {monitor[f'{split}_budget_ratio']:.3f}{gain}")
    if "chosen_timesteps" in monitor:
        print(f"kept the checkpoint at {monitor['chosen_timesteps']:,} steps (best on the validation split)")
    print(f"next: metacompress apply --policy {result.policy_path} --model mobilenetv2-w8-d1-digits")
    return 0

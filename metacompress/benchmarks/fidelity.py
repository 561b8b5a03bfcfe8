"""``metacompress bench fidelity``: does the proxy rank plans like the final accuracy does?

For each model, random plans are drawn through the env (random actions under random
budgets of the training range, so plans look like what agents produce). Each plan gets
the proxy under several search-time recovery settings (BatchNorm/activation calibration
plus 0, 5, 10, 20 KD steps) and its final test accuracy after the export + KD fine-tune
users get. Reported: Spearman rank correlation per setting, and the cost of one proxy
evaluation. The env's default recovery step is chosen from this table (target >= 0.8).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import resolve_hardware
from metacompress.envs.world import TaskWorld

FIDELITY_MODELS = ("resnet-w8-d1-mnist", "vgg-w16-d1-mnist", "cnn1d-w16-d2-mnist1d")
RECOVERY_STEPS = (0, 5, 10, 20)
BUDGETS = (("bitops", 0.04, 0.2), ("size", 0.12, 0.3), ("latency", 0.3, 0.8))


@dataclass(frozen=True)
class FidelityRow:
    model: str
    plans: int
    search_finetune_steps: int
    spearman: float
    ms_per_evaluation: float
    final_mean: float


def random_plans(world: TaskWorld, model_id: str, count: int, seed: int) -> list:
    """``count`` distinct plans from random actions under random feasible budgets."""
    rng = np.random.default_rng(seed)
    evaluator, probes = world.model(model_id)
    plans, seen = [], set()
    while len(plans) < count:
        kind, low, high = BUDGETS[int(rng.integers(len(BUDGETS)))]
        budget = Budget(kind, float(np.exp(rng.uniform(np.log(low), np.log(high)))))
        try:
            context = TaskContext(evaluator, probes, resolve_hardware("m7-mcu" if kind == "latency" else "bismo-edge"), budget)
        except Exception:  # an infeasible draw: try another budget
            continue
        env = CompressionEnv(context)
        env.reset(seed=int(rng.integers(1 << 31)))
        env.action_space.seed(int(rng.integers(1 << 31)))
        done = False
        while not done:
            _, _, done, _, info = env.step(env.action_space.sample())
        if info["plan"].key() not in seen:
            seen.add(info["plan"].key())
            plans.append(info["plan"])
    return plans


def run_fidelity(models=FIDELITY_MODELS, plans_per_model: int = 50, final_steps: int = 300, seed: int = 0, progress=None) -> list[FidelityRow]:
    world = TaskWorld(search_finetune_steps=0)
    rows = []
    for model_id in models:
        evaluator, _ = world.model(model_id)
        plans = random_plans(world, model_id, plans_per_model, seed)
        final = []
        for plan in plans:
            final.append(evaluator.final_accuracy(plan, final_steps, seed))
            if progress:
                progress()
        for steps in RECOVERY_STEPS:
            evaluator._cache.clear()  # time real evaluations, not cache hits from plan generation
            start = time.perf_counter()
            proxy = [evaluator.proxy_accuracy(plan, finetune_steps=steps) for plan in plans]
            per_eval = (time.perf_counter() - start) / len(plans)
            rows.append(FidelityRow(model_id, len(plans), steps, float(spearmanr(proxy, final).correlation), 1e3 * per_eval, float(np.mean(final))))
    return rows

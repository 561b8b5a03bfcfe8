"""``metacompress bench fidelity``: does the proxy rank plans like the final accuracy does?

For each model, random plans are drawn through the env (random actions under random
budgets of the training range, so plans look like what agents produce). Each plan gets
the proxy under several search-time recovery settings (BatchNorm/activation calibration
plus 0, 5, 10, 20 KD steps) and its final test accuracy after the export + KD fine-tune
users get. Reported: Spearman rank correlation per setting, and the cost of one proxy
evaluation. The env's default recovery step is chosen from this table (target >= 0.8).

Random plans are easy to rank (most are far apart). Where planners compete is near the
solver's plan, so ``--near-solver`` draws the plans as noisy corrections (std
``NEAR_SOLVER_NOISE`` in action space) around the HAWQ-style ILP's plan of one task per
model, the residual planner's search space, and also reports the correlation among the
*good* plans: those whose final accuracy is within ``GOOD_PLANS_POINTS`` of the best.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from metacompress.agents.residual import solver_anchored
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import resolve_hardware
from metacompress.envs.executor import Executor
from metacompress.envs.world import TaskWorld

FIDELITY_MODELS = ("resnet-w8-d1-mnist", "vgg-w16-d1-mnist", "cnn1d-w16-d2-mnist1d")
NEAR_SOLVER_TASK = ("bismo-edge", Budget("bitops", 0.12))
NEAR_SOLVER_NOISE = 0.3
GOOD_PLANS_POINTS = 0.05
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
    good_plans: int = 0
    good_spearman: float = float("nan")


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


def solver_neighbourhood_plans(world: TaskWorld, model_id: str, count: int, seed: int) -> list:
    """The solver's plan and up to ``count - 1`` distinct noisy corrections of it (the residual search space)."""
    rng = np.random.default_rng(seed)
    evaluator, probes = world.model(model_id)
    hardware, budget = NEAR_SOLVER_TASK
    view = solver_anchored(TaskContext(evaluator, probes, resolve_hardware(hardware), budget), with_baseline=False)
    env = CompressionEnv(view)
    plans, seen = [], set()
    for attempt in range(20 * count):
        env.reset(seed=seed)
        done = False
        while not done:
            noise = rng.normal(0.0, NEAR_SOLVER_NOISE, 3) if attempt else np.zeros(3)
            _, _, done, _, info = env.step(noise.astype(np.float32))
        if info["plan"].key() not in seen:
            seen.add(info["plan"].key())
            plans.append(info["plan"])
        if len(plans) == count:
            break
    return plans


def run_fidelity(models=FIDELITY_MODELS, plans_per_model: int = 50, final_steps: int = 300, seed: int = 0, progress=None,
                 near_solver: bool = False, executor: Executor | None = None) -> list[FidelityRow]:
    """One row per (model, proxy recovery setting); fine-tunes and proxies run on ``executor`` (default in-process)."""
    world = TaskWorld(search_finetune_steps=0)
    rows = []
    draw = solver_neighbourhood_plans if near_solver else random_plans
    for model_id in models:
        evaluator, _ = world.model(model_id)
        plans = draw(world, model_id, plans_per_model, seed)
        if executor is not None:
            evaluator.executor = executor
        final = evaluator.final_accuracies(plans, final_steps, seed, (lambda _: progress()) if progress else None)
        for steps in RECOVERY_STEPS:
            evaluator.clear_cache()  # time real evaluations, not cache hits from plan generation
            start = time.perf_counter()
            proxy = evaluator.proxy_accuracies(plans, finetune_steps=steps)
            per_eval = (time.perf_counter() - start) / len(plans)
            good = [i for i, f in enumerate(final) if f >= max(final) - GOOD_PLANS_POINTS]
            good_rho = float(spearmanr([proxy[i] for i in good], [final[i] for i in good]).correlation) if len(good) >= 3 else float("nan")
            rows.append(FidelityRow(model_id, len(plans), steps, float(spearmanr(proxy, final).correlation), 1e3 * per_eval,
                                    float(np.mean(final)), len(good), good_rho))
    return rows

"""``metacompress bench executor``: what each executor backend costs per evaluation, and what N machines would buy.

For each backend (in-process, process pool, Ray) and 1 and 2 workers, the same seeded
random plans of one zoo model are scored through ``ModelEvaluator.proxy_accuracies`` (the
path every batching planner takes). Per setting:

- ``start_s``: starting the executor (a process pool spawns lazily, so 0; Ray: ``ray.init``
  of a local cluster, paid once per command);
- ``ship_s``: the first batch of ``workers`` plans: shipping the evaluator and rebuilding
  it on each worker (once per worker and model), plus those evaluations;
- ``evals_per_s``: steady throughput on ``plans`` further plans;
- ``overhead_ms``: per evaluation, worker-seconds of wall time beyond the evaluation itself
  (``workers * wall / plans - in-process seconds per evaluation``): transport, scheduling
  and result handling.

The in-process evaluation time ``t`` and the per-evaluation overhead ``o`` give the
projection: K workers (over any number of machines) score about ``K / (t + o)``
evaluations per second, the speed-up over in-process being ``K t / (t + o)``, until the
driver's own dispatch cost per task (``dispatch_ms``, measured with a no-op task) caps the
rate at ``1 / dispatch``. Every plan scored is checked to equal the in-process score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from metacompress.benchmarks.fidelity import random_plans
from metacompress.envs.executor import make_executor
from metacompress.envs.world import TaskWorld
from metacompress.errors import BenchConfigError

DEFAULT_MODEL = "mlp-w64-d1-digits"
PROJECTED_WORKERS = (2, 8, 32, 128)


@dataclass(frozen=True)
class ScalingRow:
    """One (backend, workers) measurement; times in seconds unless the name says ms."""

    backend: str
    workers: int
    start_s: float
    ship_s: float
    evals_per_s: float
    overhead_ms: float
    dispatch_ms: float
    speedup: float  # over the same backend with 1 worker


def _noop(_, item: int) -> int:
    return item


def run_scaling(model_id: str = DEFAULT_MODEL, plans: int = 24, seed: int = 0, backends=("inprocess", "process", "ray"),
                worker_counts=(1, 2), ray_address: str | None = None, search_finetune_steps: int = 0) -> tuple[float, list[ScalingRow]]:
    """Measure every (backend, workers); returns (in-process seconds per evaluation, rows).

    Raises:
        BenchConfigError: if ``plans`` < 2, or a backend scored a plan differently from in-process.
    """
    if plans < 2:
        raise BenchConfigError(f"--plans {plans} must be >= 2 (a steady batch), e.g. 24")
    world = TaskWorld(search_finetune_steps=search_finetune_steps)
    evaluator, _ = world.model(model_id)
    drawn = random_plans(world, model_id, plans + 2 * max(worker_counts) + 1, seed)
    evaluator.clear_cache()
    start = time.perf_counter()
    reference = [evaluator.proxy_accuracy(p) for p in drawn]
    per_eval = (time.perf_counter() - start) / len(drawn)
    rows: list[ScalingRow] = []
    for backend in backends:
        single_rate = None
        for workers in ((1,) if backend == "inprocess" else worker_counts):
            start = time.perf_counter()
            executor = make_executor(backend, workers, ray_address if backend == "ray" else None)
            started = time.perf_counter() - start
            try:
                evaluator.executor = executor
                evaluator.clear_cache()
                evaluator._shipment = None  # a new token: every setting pays its own shipping and rebuild
                first, rest = drawn[:workers], drawn[workers: workers + plans]
                start = time.perf_counter()
                scores = evaluator.proxy_accuracies(first)
                shipped = time.perf_counter() - start
                start = time.perf_counter()
                scores += evaluator.proxy_accuracies(rest)
                wall = time.perf_counter() - start
                if scores != reference[: workers + plans]:
                    raise BenchConfigError(f"{backend} with {workers} worker(s) scored plans differently from in-process")
                start = time.perf_counter()
                executor.map(_noop, list(range(plans)), evaluator.shipment())  # the workers already hold it
                dispatch = (time.perf_counter() - start) / plans
            finally:
                evaluator.executor = make_executor("inprocess")
                executor.close()
            rate = len(rest) / wall
            single_rate = single_rate or rate
            rows.append(ScalingRow(backend, workers, started, shipped, rate, 1e3 * max(workers * wall / len(rest) - per_eval, 0.0),
                                   1e3 * dispatch, rate / single_rate))
    return per_eval, rows


def projection(per_eval_s: float, overhead_ms: float, dispatch_ms: float, workers: int) -> float:
    """Evaluations per second K workers would reach: K / (t + o), capped by the driver's 1 / dispatch."""
    rate = workers / (per_eval_s + overhead_ms / 1e3)
    return min(rate, 1e3 / dispatch_ms) if dispatch_ms > 0 else rate

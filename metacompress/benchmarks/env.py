"""``metacompress bench env``: episodes per second and the env's own overhead share.

On reference tasks, random-action episodes are timed end to end. The evaluator times
its own work (restore, mask, fake-quantize, calibrate, KD steps, score the search split:
the model work); everything else in ``reset``/``step`` (projection, features, plan
bookkeeping) is the env's overhead, which should stay under 25% of an episode.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from metacompress.envs.compression_env import CompressionEnv
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld

REFERENCE_TASKS = (
    Task("resnet-w8-d1-digits", "bismo-edge", Budget("bitops", 0.1)),
    Task("vgg-w16-d1-mnist", "m7-mcu", Budget("latency", 0.5)),
    Task("mobilenetv2-w8-d1-digits", "bitfusion-edge", Budget("energy", 0.3)),
    Task("mlp-w256-d2-mnist", "t4-int4", Budget("size", 0.2)),
)


@dataclass(frozen=True)
class EnvBenchRow:
    task: str
    units: int
    episodes: int
    episodes_per_second: float
    steps_per_second: float
    evaluation_share: float
    overhead_share: float
    ms_per_evaluation: float

    def as_dict(self) -> dict:
        return asdict(self)


def run_env_bench(episodes: int = 40, seed: int = 0, search_finetune_steps: int | None = None) -> list[EnvBenchRow]:
    """Time ``episodes`` random-action episodes per reference task (fresh evaluator cache)."""
    kwargs = {} if search_finetune_steps is None else {"search_finetune_steps": search_finetune_steps}
    world = TaskWorld(**kwargs)
    rows = []
    for task in REFERENCE_TASKS:
        context = world.context(task)  # built before timing: model load and probes are one-off
        evaluator = context.evaluator
        evaluator._cache.clear()
        env = CompressionEnv(context)
        env.action_space.seed(seed)
        eval_seconds, evaluations, steps = evaluator.stats.seconds, evaluator.stats.evaluations, 0
        start = time.perf_counter()
        env.reset(seed=seed)
        for _ in range(episodes):
            env.reset()
            done = False
            while not done:
                _, _, done, _, _ = env.step(env.action_space.sample())
                steps += 1
        total = time.perf_counter() - start
        spent = evaluator.stats.seconds - eval_seconds
        count = max(evaluator.stats.evaluations - evaluations, 1)
        rows.append(
            EnvBenchRow(task.id, len(context.decision_units), episodes, episodes / total, steps / total,
                        spent / total, 1 - spent / total, 1e3 * spent / count)
        )
    return rows


def summarize(rows: list[EnvBenchRow]) -> dict:
    return {
        "episodes_per_second": float(np.mean([r.episodes_per_second for r in rows])),
        "overhead_share": float(np.mean([r.overhead_share for r in rows])),
    }

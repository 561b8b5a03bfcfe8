"""The planner seam: anything that turns a task into a plan, and the episode every plan goes through.

A planner is anything with ``plan(context, evaluations, seed) -> PlanResult`` (DESIGN.md
section 6): the learned agents, the HAWQ-style ILP, the best uniform setting, random and
evolutionary search and per-task DDPG all meet here. Every planner produces its plan by
feeding raw actions through a ``CompressionEnv`` episode (``rollout``), so all of them
are scored by the same evaluator and kept within budget by the same AMC-style projection
as the learned agent: no planner can report a plan that does not fit.

Counting evaluations (one rule for every planner): a planner's ``evaluations_used`` is the
number of *distinct executed plans* it had scored. Scoring the same plan again is free,
as it is in the evaluator's cache. The count is the planner's own, not the evaluator's
``stats.evaluations``, so it does not depend on what other planners already cached on a
shared evaluator (a cold cache turns each counted plan into exactly one real evaluation;
``info["new_evaluations"]`` reports how many real evaluations this call caused).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from metacompress.compressors.plan import Plan
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.errors import EvaluationBudgetError, MetacompressError

Actions = np.ndarray | Sequence[np.ndarray] | Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class PlanResult:
    """What a planner returns for one task.

    Args:
        plan: the chosen plan (within budget: it came out of a ``CompressionEnv`` episode).
        proxy_change: its proxy accuracy change on the search split (a fraction, <= ~0).
        evaluations_used: distinct plans this planner scored (see the module docstring).
        wall_seconds: wall time of the ``plan`` call, evaluations included.
        cost_ratio: the plan's cost as a fraction of the unpruned W8A8 cost.
        info: method-specific details (``episodes``, ``new_evaluations``, ``history`` of
            proxy changes in evaluation order, ...).
    """

    plan: Plan
    proxy_change: float
    evaluations_used: int
    wall_seconds: float
    cost_ratio: float
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.evaluations_used < 0 or self.wall_seconds < 0:
            raise MetacompressError(
                f"a PlanResult needs evaluations_used >= 0 and wall_seconds >= 0, got {self.evaluations_used} "
                f"and {self.wall_seconds}"
            )


@runtime_checkable
class Planner(Protocol):
    """Anything that plans one task with at most ``evaluations`` proxy evaluations."""

    name: str

    def plan(self, context: TaskContext, evaluations: int, seed: int) -> PlanResult: ...


def rollout(context: TaskContext | CompressionEnv, actions: Actions) -> tuple[Plan, float, dict[str, Any]]:
    """Run one ``CompressionEnv`` episode and return (plan, reward, final info).

    Args:
        context: the task, or an env already built on it (reused across rollouts).
        actions: raw actions in [-1, 1]^3, one per decision unit (an (n, 3) array or a
            sequence), or a callable ``(observation, step) -> action`` (e.g. a policy).

    Returns:
        The executed plan, its proxy accuracy change (the reward before any per-task
        baseline is subtracted) and the last step's info
        (``plan``, ``cost_ratio``, ``decisions``, ...).

    Raises:
        MetacompressError: if an action sequence does not hold one action per decision unit.
    """
    env = context if isinstance(context, CompressionEnv) else CompressionEnv(context)
    observation, _ = env.reset()
    units = len(env.context.decision_units)
    if not callable(actions) and len(actions) != units:
        raise MetacompressError(f"rollout needs one action per decision unit ({units}), got {len(actions)}")
    for step in range(units):
        action = actions(observation, step) if callable(actions) else actions[step]
        observation, reward, terminated, _, info = env.step(np.asarray(action, dtype=np.float32))
    if not terminated:
        raise MetacompressError("the episode did not end after the last decision unit; was the env built with attempts > 1?")
    return info["plan"], float(info["accuracy_change"]), info


def check_evaluations(name: str, evaluations: int, minimum: int = 1) -> None:
    """Raise ``EvaluationBudgetError`` unless ``evaluations`` is an integer >= ``minimum``."""
    if isinstance(evaluations, bool) or not isinstance(evaluations, (int, np.integer)) or evaluations < minimum:
        raise EvaluationBudgetError(
            f"{name} needs at least {minimum} proxy evaluation(s) to produce a plan, got evaluations={evaluations!r}; "
            f"pass an integer >= {minimum}"
        )


class ScoreBook:
    """The plans one ``plan`` call has scored: its evaluation count, history and best plan.

    Args:
        context: the task.
        budget: evaluations (distinct plans) allowed.
        max_episodes: episodes allowed in all (repeats of a scored plan are free but still
            take an episode; this bounds the loop on tasks with few distinct plans).
        observation: the episodes' observation kind (``"network"`` for residual policies).
    """

    def __init__(self, context: TaskContext, budget: int, max_episodes: int, observation: str = "step") -> None:
        self.context = context
        self.budget = int(budget)
        self.max_episodes = int(max_episodes)
        self.env = CompressionEnv(context, observation=observation)
        self.scores: dict[tuple, float] = {}
        self.history: list[float] = []
        self.episodes = 0
        self.best: tuple[float, Plan, np.ndarray | None, list[dict] | None] | None = None
        self.plans: list[Plan] = []  # the distinct plans scored, in the order of ``history``
        self.refinements = 0  # evaluations spent on higher-fidelity re-scorings (``refine``)
        self._episodes: list[tuple[np.ndarray | None, list[dict] | None]] = []  # each of ``plans``' first episode
        self._start = time.perf_counter()
        self._evaluator_start = context.evaluator.stats.evaluations

    @property
    def used(self) -> int:
        return len(self.scores) + self.refinements

    @property
    def exhausted(self) -> bool:
        return self.used >= self.budget or self.episodes >= self.max_episodes

    def run(self, actions: np.ndarray) -> float:
        """Score raw actions (n, 3) through one env episode; returns the proxy change."""
        plan, reward, info = rollout(self.env, actions)
        self.record(plan, reward, np.asarray(actions, dtype=np.float32), info.get("decisions"))
        return reward

    def run_batch(self, batch: Sequence[np.ndarray]) -> list[float]:
        """Score many raw action arrays; the same as ``run`` on each in order, with their new plans evaluated together.

        The plans the batch would newly count (at most the evaluations left) are scored in
        one ``proxy_accuracies`` call, on the evaluator's executor (``envs.executor``); the
        episodes then run in order against the filled cache, so the history, count and best
        plan are exactly those of running them one by one.
        """
        room, new = self.budget - self.used, {}
        for actions in batch:
            plan = self.env.plan_of(actions)
            if len(new) < room and plan.key() not in self.scores:
                new.setdefault(plan.key(), plan)
        self.context.evaluator.proxy_accuracies(list(new.values()))
        return [self.run(actions) for actions in batch]

    def run_actors(self, make_actor: Callable[[], Callable[[np.ndarray, int], np.ndarray]]) -> list[float]:
        """Roll out ``room()`` fresh actors unscored (``CompressionEnv.dry_actions``), then score them as one batch.

        The same episodes, in the same order, as rolling each actor out and recording it
        (the actors draw their noise in the same sequence), with the new plans evaluated together.
        """
        return self.run_batch([self.env.dry_actions(make_actor()) for _ in range(self.room())])

    def room(self) -> int:
        """Episodes that can run before the book is exhausted, however many turn out new."""
        return max(0, min(self.budget - self.used, self.max_episodes - self.episodes))

    def record(self, plan: Plan, reward: float, actions: np.ndarray | None = None, decisions: list[dict] | None = None) -> None:
        """Count one finished episode; the first plan with the highest proxy stays best.

        ``decisions``: the episode's per-unit rows (raw and executed actions) from the env's
        info, which the report's ``raw_*`` columns show for the best plan.
        """
        self.episodes += 1
        key = plan.key()
        if key not in self.scores:
            self.scores[key] = reward
            self.history.append(reward)
            self.plans.append(plan)
            self._episodes.append((actions, decisions))
        if self.best is None or reward > self.best[0]:
            self.best = (reward, plan, actions, decisions)

    def refine(self, top: int, finetune_steps: int, cost: int = 1) -> None:
        """Choose among the ``top`` plans by proxy with a proxy of ``finetune_steps`` KD steps (``cost`` evaluations each).

        Among the best plans of a task the calibration-only proxy ranks poorly (README,
        "where planners compete"), while a few KD steps, too slow to score every
        candidate with, rank them closer to the final accuracy: multi-fidelity selection.
        The chosen plan becomes ``best``; its ``proxy_change`` stays its calibration-only
        score, so every method reports the same proxy. No-op below two candidates.
        """
        order = sorted(range(len(self.plans)), key=lambda i: -self.history[i])[:top]
        if len(order) < 2:
            return
        scores = self.context.evaluator.proxy_accuracies([self.plans[i] for i in order], finetune_steps=finetune_steps)
        self.refinements += len(order) * cost
        pick = order[int(np.argmax(scores))]
        self.best = (self.history[pick], self.plans[pick], *self._episodes[pick])

    def result(self, **info: Any) -> PlanResult:
        """The best plan as a ``PlanResult`` (``info`` adds method-specific entries)."""
        if self.best is None:
            raise MetacompressError("no episode was run, so there is no plan; give the planner at least one evaluation")
        reward, plan, actions, decisions = self.best
        info.update(
            episodes=self.episodes,
            refinements=self.refinements,
            new_evaluations=self.context.evaluator.stats.evaluations - self._evaluator_start,
            history=list(self.history),
        )
        if actions is not None:
            info["actions"] = actions.tolist()
        if decisions is not None:
            info["decisions"] = decisions
        return PlanResult(
            plan=plan,
            proxy_change=reward,
            evaluations_used=self.used,
            wall_seconds=time.perf_counter() - self._start,
            cost_ratio=self.context.cost_ratio(plan.kept, plan.w_bits, plan.a_bits),
            info=info,
        )

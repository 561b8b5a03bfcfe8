"""The solver-anchored residual planner: the exact solver plans, the policy learns what it misjudges.

Every production mixed-precision tool scores each layer's options and solves the budget
exactly (HAWQ-V3's ILP, NNCF, AIMET AMP, ModelOpt); their weak part is the score (isolated,
additive per-layer sensitivities miss interactions), not the solver. So the learned planner
keeps the solver in the loop (residual policy learning, Silver et al. 2018; Johannink et
al. 2019): each task's context is *anchored* on the HAWQ-style ILP's plan
(``TaskContext.anchored``), action 0 reproduces that plan, and the policy, trained with a
per-task baseline (reward = proxy change minus the solver plan's), learns where to deviate.

- ``solver_anchored``: the anchored context of a task (the ILP's plan and, for training
  rewards, its proxy change).
- ``ResidualPlanner``: zero-shot, one deterministic rollout of the policy on the anchored
  task (no proxy evaluation chooses it), then ``fill_budget``.
- ``ResidualFewShotPlanner``: with N evaluations, the solver's plan, the zero-shot plan and
  noisy rollouts around the policy; the best five by proxy are re-scored with a short KD
  recovery (``REFINE_TOP``, ``REFINE_STEPS``: the last five of the N evaluations) and the best
  of those is returned (the solver's and zero-shot plans compete whenever they are among the five).
  Evaluations a planner leaves unspent lengthen that re-scoring (``refine_depth``).
  Every few-shot planner built on ``ResidualPlanner`` (re-solve, the meta-learners) opens and
  closes the same way (``_opening``, ``_closing``); only how it proposes plans differs.
"""

from __future__ import annotations

import math
import time

import numpy as np
from stable_baselines3.common.policies import ActorCriticPolicy

from metacompress.agents.hawq import UnitOptions, actions_for, fill_budget, solve_hawq, unit_options
from metacompress.agents.learned import PolicyActor
from metacompress.agents.planner import PlanResult, ScoreBook, check_evaluations, rollout
from metacompress.agents.policy_io import PolicyMetadata
from metacompress.compressors.budget import PlanVectors
from metacompress.compressors.plan import Plan
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext

FEW_SHOT_NOISE = 0.25  # action-space std of the exploration around the residual policy's mean
REFINE_TOP = 5
REFINE_STEPS = 30
"""Few-shot's last ``REFINE_TOP`` evaluations re-score its best plans with a ``REFINE_STEPS``-step KD proxy
(``ScoreBook.refine``). Chosen on the validation split (60 tasks, final change over plain
sample-and-select with 30 plans; t = mean / standard error): top 3 at 10 steps +0.54 (t 1.95),
top 3 at 30 +0.63 (t 2.24), top 5 at 30 +0.91 (t 2.50; better on 20 tasks, worse on 17), for
about 2 s of extra proxy time per task on these models."""
REFINE_MAX_STEPS = 100
"""The deepest re-scoring that unspent evaluations buy (``refine_depth``): the bench's final recovery.
Chosen on the validation split with the re-solver's widened posterior (``score_correction.WIDENING``;
README, experiments 16-19): together they gain +0.36 points over the v0.5 re-solver on 144 tasks
(t 2.42); deeper re-scoring alone +0.30 on 96 (t 1.74), more leaders re-scored at 30 steps -0.01."""
ACTION_SCALE = 0.25
"""Zero-shot reads the policy's corrections scaled by this: a trust region around the solver's plan
(0 = the solver). Chosen on the v0.4 validation split (its first 48 tasks, 12 of each kind; final
change after the 100-step recovery, ``fill_budget`` on), against hawq: scale 0 +1.79 points, 0.25
+2.28 (57% of pairs), 0.5 +1.91, 0.75 +2.00, 1.0 +1.45. On its unseen (generated) families the
corrections hurt in proportion to their size (+0.26, -0.45, -1.28, -1.75, -2.24) while they help on
the vgg kinds; 0.25 keeps most of that help. v0.3 chose 0.5 on the first split (vgg tasks only)."""
EXPLORATION_SCALE = 0.5
"""Few-shot's trials (noisy rollouts, the meta-learners' trials) read the policy at this scale: the
radius its noise explores around the solver's plan, the one every few-shot result was measured with."""


def solver_anchored(context: TaskContext, with_baseline: bool = True, options: list[UnitOptions] | None = None) -> TaskContext:
    """``context`` anchored on the solver's plan; with ``with_baseline`` its reward is the gain over that plan.

    The baseline costs one proxy evaluation (the solver's plan, through the same env
    episode as every plan); planning alone (``with_baseline=False``) costs none.
    ``options`` are the solver's scored options (``hawq.unit_options``), if already made.
    """
    solution = solve_hawq(context, options if options is not None else unit_options(context))
    view = context.anchored(solution.choices, 0.0)
    if with_baseline:
        _, change, _ = rollout(view, np.zeros((len(view.decision_units), 3), dtype=np.float32))
        view.baseline_change = change
    return view


class ResidualPlanner:
    """Zero-shot: the residual policy's deterministic corrections to the solver's plan, then ``fill_budget``.

    Args:
        policy: a policy trained with ``metacompress train --algo residual``.
        metadata: its description (``method == "residual"``).
        fill: spend unused budget after the rollout (default).
        action_scale: shrink the policy's corrections toward the solver's plan (chosen on
            the validation split, see ``ACTION_SCALE``).
    """

    name = "zero-shot"

    def __init__(self, policy: ActorCriticPolicy, metadata: PolicyMetadata, fill: bool = True, action_scale: float = ACTION_SCALE) -> None:
        self.policy, self.metadata, self.fill, self.action_scale = policy, metadata, fill, action_scale

    def _actor(self, noise: float = 0.0, rng: np.random.Generator | None = None, scale: float | None = None):
        """The policy's deterministic corrections (plus ``noise``), read at ``scale`` (default: ``action_scale``)."""
        actor = PolicyActor(self.policy, deterministic=True, noise=noise, rng=rng)
        scale = self.action_scale if scale is None else scale
        return lambda observation, step: scale * np.clip(actor(observation, step), -1.0, 1.0)

    def _policy_plan(self, view: TaskContext, env: CompressionEnv, options: list[UnitOptions]) -> tuple[Plan, float, dict]:
        plan, change, info = rollout(env, self._actor())
        if not self.fill:
            return plan, change, info
        vectors = PlanVectors(list(plan.kept), list(plan.w_bits), list(plan.a_bits))
        filled = fill_budget(view, vectors, options)
        if filled == vectors:
            return plan, change, info
        filled_plan, filled_change, filled_info = rollout(env, actions_for(view, filled))
        return filled_plan, filled_change, filled_info

    def _opening(self, context: TaskContext, evaluations: int) -> tuple[TaskContext, list[UnitOptions], ScoreBook]:
        """A few-shot call's first evaluations: the solver's plan, then the zero-shot plan (if budget is left).

        The book holds ``evaluations`` less the last ones ``_closing`` spends re-scoring the
        leaders (``refined_evaluations``), so every residual few-shot planner picks its plan the same way.
        """
        view, options = self._anchored(context)
        sampled = evaluations - refined_evaluations(context, evaluations)
        book = ScoreBook(view, sampled, max_episodes=4 * evaluations, observation=self.metadata.observation)
        book.run(np.zeros((len(view.decision_units), 3), dtype=np.float32))  # the solver's own plan
        if not book.exhausted:
            plan, change, _ = self._policy_plan(view, book.env, options)
            book.record(plan, change)
        return view, options, book

    @staticmethod
    def _closing(book: ScoreBook, evaluations: int, **info) -> PlanResult:
        """A few-shot call's last evaluations: the best plans re-scored with KD steps (``refine_depth``), the best returned."""
        top = refined_evaluations(book.context, evaluations)
        steps, cost = refine_depth(top, book.budget - book.used)
        book.refine(top, steps, cost)
        return book.result(refine_steps=steps, **info)

    def _anchored(self, context: TaskContext) -> tuple[TaskContext, list[UnitOptions]]:
        """The task anchored on the solver's plan (no evaluation), and the solver's scored options."""
        options = unit_options(context)
        return solver_anchored(context, with_baseline=False, options=options), options

    def plan(self, context: TaskContext, evaluations: int = 0, seed: int = 0) -> PlanResult:
        start = time.perf_counter()
        view, options = self._anchored(context)
        env = CompressionEnv(view, observation=self.metadata.observation)
        plan, change, info = self._policy_plan(view, env, options)
        return PlanResult(
            plan, change, 0, time.perf_counter() - start, info["cost_ratio"],
            {"note": "proxy measured for the report only; the plan was chosen without evaluations", "decisions": info["decisions"]},
        )


class ResidualFewShotPlanner(ResidualPlanner):
    """N evaluations: the solver's plan, the zero-shot plan, noisy residual rollouts, then the best few re-scored with KD steps."""

    name = "few-shot-sample"

    def plan(self, context: TaskContext, evaluations: int = 30, seed: int = 0) -> PlanResult:
        check_evaluations(self.name, evaluations)
        _, _, book = self._opening(context, evaluations)
        rng = np.random.default_rng(seed)
        while not book.exhausted:  # noisy rollouts drawn a batch at a time, scored together (envs.executor)
            book.run_actors(lambda: self._actor(FEW_SHOT_NOISE, rng, EXPLORATION_SCALE))
        return self._closing(book, evaluations)


def refine_depth(top: int, unspent: int) -> tuple[int, int]:
    """KD steps of the leaders' re-scoring and the evaluations each re-scoring costs (one per ``REFINE_STEPS``).

    A planner that stops proposing before its budget is spent (re-solving does, once its
    posterior keeps returning plans it has scored) buys deeper re-scorings with what it
    left: ``REFINE_STEPS`` more steps per leader for every ``top`` unspent evaluations, up
    to ``REFINE_MAX_STEPS``. A planner that spends its budget re-scores at ``REFINE_STEPS``;
    with no leaders to re-score (``top`` 0) nothing is re-scored or charged.
    """
    if top < 1:
        return 0, 0
    steps = min(REFINE_MAX_STEPS, REFINE_STEPS * (1 + unspent // top))
    return steps, math.ceil(steps / REFINE_STEPS)


def refined_evaluations(context: TaskContext, evaluations: int) -> int:
    """How many of ``evaluations`` go to ``ScoreBook.refine``: ``REFINE_TOP`` from 30 up, one in six below, none
    under 12 (two candidates at least) or when every proxy evaluation already runs ``REFINE_STEPS`` KD steps."""
    if context.evaluator.search_finetune_steps >= REFINE_STEPS:
        return 0
    refine = min(REFINE_TOP, evaluations // 6)
    return refine if refine >= 2 else 0

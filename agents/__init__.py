"""Who decides: planners that turn a task into a plan (baselines here; learned agents alongside).

Every planner meets the ``Planner`` protocol (``plan(context, evaluations, seed) ->
PlanResult``) and produces its plan through a ``CompressionEnv`` episode (``rollout``).
"""

from metacompress.agents.ddpg_baseline import DDPGPlanner, TruncatedNormalSchedule
from metacompress.agents.hawq import HawqPlanner, HawqSolution, UnitOptions, solve_hawq, unit_options
from metacompress.agents.planner import (
    EvaluationBudgetError,
    Planner,
    PlanResult,
    ScoreBook,
    compare_on_context,
    executed_vectors,
    rollout,
)
from metacompress.agents.search_baselines import EvolutionPlanner, RandomSearchPlanner, UniformCandidate, UniformPlanner

__all__ = [
    "DDPGPlanner",
    "EvaluationBudgetError",
    "EvolutionPlanner",
    "HawqPlanner",
    "HawqSolution",
    "PlanResult",
    "Planner",
    "RandomSearchPlanner",
    "ScoreBook",
    "TruncatedNormalSchedule",
    "UniformCandidate",
    "UniformPlanner",
    "UnitOptions",
    "compare_on_context",
    "executed_vectors",
    "rollout",
    "solve_hawq",
    "unit_options",
]

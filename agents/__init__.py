"""Who decides: planners that turn a task into a plan, the learned agents and the baselines.

Every planner meets the ``Planner`` protocol (``plan(context, evaluations, seed) ->
PlanResult``) and produces its plan through a ``CompressionEnv`` episode (``rollout``).
"""

from metacompress.agents.ddpg_baseline import DDPGPlanner, TruncatedNormalSchedule
from metacompress.agents.hawq import HawqPlanner, HawqSolution, UnitOptions, solve_hawq, unit_options
from metacompress.agents.learned import RL2Planner, SampleAndSelectPlanner, ZeroShotPlanner
from metacompress.agents.meta_adapt import InnerLoop, MetaFewShotPlanner
from metacompress.agents.planner import Planner, PlanResult, ScoreBook, rollout
from metacompress.agents.registry import PlannerEvaluation, build_planner, evaluate_planner, load_planner, parse_method
from metacompress.agents.predictor_io import load_predictor, save_predictor
from metacompress.agents.unit_predictors import PredictedScorePlanner, UnitPredictor
from metacompress.agents.search_baselines import EvolutionPlanner, RandomSearchPlanner, UniformCandidate, UniformPlanner

__all__ = [
    "DDPGPlanner",
    "EvolutionPlanner",
    "HawqPlanner",
    "HawqSolution",
    "InnerLoop",
    "MetaFewShotPlanner",
    "PlanResult",
    "PredictedScorePlanner",
    "PlannerEvaluation",
    "Planner",
    "RL2Planner",
    "RandomSearchPlanner",
    "SampleAndSelectPlanner",
    "ScoreBook",
    "TruncatedNormalSchedule",
    "UniformCandidate",
    "UniformPlanner",
    "UnitOptions",
    "UnitPredictor",
    "ZeroShotPlanner",
    "build_planner",
    "evaluate_planner",
    "load_planner",
    "load_predictor",
    "parse_method",
    "save_predictor",
    "rollout",
    "solve_hawq",
    "unit_options",
]

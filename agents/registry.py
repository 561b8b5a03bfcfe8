"""Planners by name, the shipped policies, and the one loop that plans a task and scores the plan.

A method is a planner plus its evaluation budget, named ``<kind>-<N>`` (``random-300``:
random search with 300 proxy evaluations) or by its kind alone when the budget is fixed
(``zero-shot``: 0, ``hawq``: 1, ``uniform``: up to 64 candidates, of which it reports
what it used). Every planner meets the same evaluator and budget projection
(``agents.planner``); only the policy-backed kinds need a saved policy folder. The
policies ``metacompress train`` made for the release ship in ``agents/policies/``.

``evaluate_planner`` is the one loop every comparison uses (``compress``, ``bench agents``
and the tests): plan on the search split, then export the plan, recover it with the
final KD fine-tune and score it on the test split.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from metacompress.agents.ddpg_baseline import DDPGPlanner
from metacompress.agents.hawq import HawqPlanner
from metacompress.agents.learned import RL2Planner, SampleAndSelectPlanner, ZeroShotPlanner
from metacompress.agents.meta_adapt import VARIANTS, MetaFewShotPlanner, inner_loop_for
from metacompress.agents.planner import Planner, PlanResult
from metacompress.agents.policy_io import load_extra, load_policy
from metacompress.agents.predictor_io import is_predictor, load_predictor
from metacompress.agents.residual import ResidualFewShotPlanner, ResidualPlanner
from metacompress.agents.score_correction import CorrectedSolverPlanner
from metacompress.agents.search_baselines import EvolutionPlanner, RandomSearchPlanner, UniformPlanner
from metacompress.agents.unit_predictors import PredictedScorePlanner
from metacompress.envs.context import TaskContext
from metacompress.errors import PolicyError, UnknownMethod

SHIPPED_POLICIES = Path(__file__).parent / "policies"
SHIPPED_NAMES = {name: SHIPPED_POLICIES / name for name in ("default", "ppo", "rl2", *VARIANTS, "relation", "prototypical")}
"""default: the solver-anchored residual policy; ppo: version 0.1's per-unit policy (kept to reproduce its rows);
reptile, maml, meta-sgd, meta-curvature: head meta-learners of the default (``agents.meta_adapt``), where shipped;
relation, prototypical: unit option-table predictors, the scores of hawq-relation and hawq-proto (``agents.predictor_io``)."""
DEFAULT_POLICY = SHIPPED_NAMES["default"]

# kind -> (policy it needs or None, fixed evaluation budget or None when the name carries it)
KINDS: dict[str, tuple[str | None, int | None]] = {
    "zero-shot": ("policy", 0),
    "few-shot-sample": ("policy", None),
    "few-shot-resolve": ("policy", None),
    "few-shot-rl2": ("rl2", None),
    "few-shot-reptile": ("reptile", None),
    "few-shot-maml": ("maml", None),
    "few-shot-meta-sgd": ("meta_sgd", None),
    "few-shot-meta-curvature": ("meta_curvature", None),
    "uniform": (None, 64),
    "hawq": (None, 1),
    "hawq-relation": ("relation", 1),
    "hawq-proto": ("prototypical", 1),
    "ddpg": (None, None),
    "random": (None, None),
    "evolution": (None, None),
    "oracle-evolution": (None, None),
}
LEARNED_KINDS = (
    "zero-shot", "few-shot-sample", "few-shot-resolve", "few-shot-rl2", "few-shot-reptile", "few-shot-maml", "few-shot-meta-sgd",
    "few-shot-meta-curvature", "hawq-relation", "hawq-proto",
)
STANDARD_METHODS = (
    "zero-shot", "few-shot-resolve-30", "few-shot-sample-30", "few-shot-rl2-30", "few-shot-reptile-30", "uniform", "hawq",
    "ddpg-300", "random-30", "random-300", "evolution-30", "evolution-300", "oracle-evolution-2000",
)
OTHER_METHODS = ("hawq-relation", "hawq-proto")
"""Named methods outside the presets' standard list (run them with --methods)."""
POLICY_FLAGS = {
    "policy": "--policy", "rl2": "--rl2-policy", "reptile": "--reptile-policy", "maml": "--maml-policy",
    "meta_sgd": "--meta-sgd-policy", "meta_curvature": "--meta-curvature-policy",
    "relation": "--relation-policy", "prototypical": "--prototypical-policy",
}
META_WHICH = ("reptile", "maml", "meta_sgd", "meta_curvature")
PREDICTOR_WHICH = ("relation", "prototypical")
"""Policies that are unit predictors (``agents.predictor_io``): the HAWQ ILP plans on their predicted scores."""
_BUDGETED = re.compile(r"^(?P<kind>[a-z0-9-]+?)-(?P<evaluations>\d+)$")


@dataclass(frozen=True)
class Method:
    """One compared method: a planner kind and the evaluations it may use.

    Args:
        name: how reports name it (``random-300``).
        kind: a key of ``KINDS``.
        evaluations: proxy evaluations (episodes for DDPG) the planner is given.
    """

    name: str
    kind: str
    evaluations: int

    @property
    def learned(self) -> bool:
        """True for the agent's modes (zero-shot, few-shot, and the solver on learned scores), False for baselines.

        Reports pair each learned method against each baseline (``hawq-relation`` vs ``hawq``).
        """
        return self.kind in LEARNED_KINDS

    @property
    def policy(self) -> str | None:
        """Which policy folder it needs: a key of ``POLICY_FLAGS`` or None."""
        return KINDS[self.kind][0]


def parse_method(name: str) -> Method:
    """The method a name denotes: a fixed-budget kind (``hawq``) or ``<kind>-<N>`` (``evolution-300``).

    Raises:
        UnknownMethod: if the name matches no kind, or a budgeted kind has no ``-<N>``.
    """
    name = name.strip()
    if name in KINDS and KINDS[name][1] is not None:
        return Method(name, name, KINDS[name][1])
    match = _BUDGETED.match(name)
    if match and KINDS.get(match["kind"], (None, 0))[1] is None and int(match["evaluations"]) >= 1:
        return Method(name, match["kind"], int(match["evaluations"]))
    budgeted = ", ".join(k for k, (_, fixed) in KINDS.items() if fixed is None)
    raise UnknownMethod(
        f"method {name!r} is unknown; use one of {', '.join((*STANDARD_METHODS, *OTHER_METHODS))}, or <kind>-<N> with N >= 1 "
        f"evaluations for a kind in: {budgeted}"
    )


@dataclass(frozen=True)
class PolicyPaths:
    """Where the policy-backed methods find their policy folders (None: not given)."""

    policy: Path | None = None
    rl2: Path | None = None
    reptile: Path | None = None
    maml: Path | None = None
    meta_sgd: Path | None = None
    meta_curvature: Path | None = None
    relation: Path | None = None
    prototypical: Path | None = None

    def get(self, which: str) -> Path | None:
        return getattr(self, which)

    def items(self) -> list[tuple[str, Path | None]]:
        """``(which, folder)`` for each key of ``POLICY_FLAGS``, in that order."""
        return [(which, self.get(which)) for which in POLICY_FLAGS]


SHIPPED = PolicyPaths(SHIPPED_NAMES["default"], SHIPPED_NAMES["rl2"], *(SHIPPED_NAMES[v] for v in VARIANTS),
                      relation=SHIPPED_NAMES["relation"], prototypical=SHIPPED_NAMES["prototypical"])


def is_saved(path: Path) -> bool:
    """True if ``path`` holds a saved policy or unit predictor (its description file; it may still be corrupt)."""
    return (path / "policy.json").exists() or is_predictor(path)


def is_shipped(path: Path) -> bool:
    """True for a policy folder shipped with the package (one of ``SHIPPED_NAMES``)."""
    return path.resolve().parent == SHIPPED_POLICIES.resolve()


def policy_label(path: Path) -> str:
    """How reports name a policy folder: shipped ones by their place in the package."""
    return f"agents/policies/{path.name} (shipped)" if is_shipped(path) else str(path)


def policy_path(policy: str | Path | None) -> Path:
    """A policy folder, or a shipped policy by name (``default``, ``rl2``, ``reptile``) unless such a folder exists here."""
    if policy is None:
        return DEFAULT_POLICY
    if str(policy) in SHIPPED_NAMES and not Path(policy).exists():
        return SHIPPED_NAMES[str(policy)]
    return Path(policy)


def load_planner(policy: str | Path | None, few_shot: int) -> Planner:
    """The learned planner for a policy folder (default: the shipped policy) and a few-shot budget."""
    path = policy_path(policy)
    if is_shipped(path) and not is_saved(path):
        raise PolicyError(f"no policy is shipped at {path}; train one with `metacompress train` and pass --policy RUN/policy")
    if is_predictor(path):  # a unit predictor: the HAWQ ILP on its scores, one evaluation whatever few_shot says
        predictor = load_predictor(path)
        return PredictedScorePlanner(predictor, "hawq-relation" if predictor.kind == "relation" else "hawq-proto")
    network, metadata = load_policy(path)
    if metadata.method in VARIANTS and few_shot > 0:
        return meta_planner(path, network, metadata)
    if metadata.method == "residual" or metadata.method in VARIANTS:  # few-shot: re-solve, chosen on the validation split
        return ResidualPlanner(network, metadata) if few_shot <= 0 else CorrectedSolverPlanner(network, metadata)
    if few_shot <= 0:
        return ZeroShotPlanner(network, metadata)
    if metadata.method == "rl2":
        return RL2Planner(network, metadata)
    return SampleAndSelectPlanner(network, metadata)


def method_planner(method: Method, policy: str | Path | None = None) -> Planner:
    """The planner of a baseline method, loading its policy where it needs one (``hawq-relation``: a relation predictor).

    Args:
        method: a parsed method that is not one of the learned modes.
        policy: its policy folder, or a shipped one by name (default: the shipped one for its kind).

    Raises:
        PolicyError: the method needs a policy and none is given or shipped, or the folder is
            corrupt or of the wrong kind; or a policy is given to a method that takes none.
    """
    if method.policy is None:
        if policy is not None:
            raise PolicyError(f"--method {method.name} plans without a policy; drop --policy")
        return build_planner(method, {})
    path = policy_path(policy) if policy is not None else SHIPPED.get(method.policy)
    if not is_saved(path):
        raise PolicyError(f"{method.name} needs a `metacompress train --algo {method.policy}` policy folder: none at {path}; pass --policy DIR")
    return build_planner(method, load_policies([method], replace(PolicyPaths(), **{method.policy: path})))


def meta_planner(path: Path, network, metadata) -> MetaFewShotPlanner:
    """The few-shot planner of a head meta-learner's policy folder, with its saved inner-loop parameters."""
    return MetaFewShotPlanner(network, metadata, inner_loop_for(network, metadata.method, load_extra(path) or None))


def missing_policies(methods: list[Method], paths: PolicyPaths) -> tuple[list[Method], list[str]]:
    """Split methods into the runnable ones and notes on those skipped for want of a policy folder."""
    runnable, notes = [], []
    for method in methods:
        path = paths.get(method.policy) if method.policy else None
        if method.policy and (path is None or not is_saved(path)):
            where = f"no policy at {path}" if path else "no policy given"
            notes.append(f"skipped {method.name}: {where}; pass {POLICY_FLAGS[method.policy]} PATH (a `metacompress train` output)")
        else:
            runnable.append(method)
    return runnable, notes


def load_policies(methods: list[Method], paths: PolicyPaths) -> dict[str, tuple]:
    """Load every policy the methods need, once; ``which -> (network, metadata)`` (plus the inner loop for a meta-learner).

    Raises:
        PolicyError: listing every folder that is corrupt, of another version, or of the
            wrong kind for its method (RL^2 needs a recurrent policy, a meta-learner's kind its own method).
    """
    loaded, problems = {}, []
    for which in sorted({m.policy for m in methods if m.policy}):
        try:
            if which in PREDICTOR_WHICH:
                predictor = load_predictor(paths.get(which))
                if predictor.kind != which:
                    raise PolicyError(f"it is a {predictor.kind} predictor; pass a `metacompress train --algo {which}` policy folder")
                loaded[which] = (predictor,)
                continue
            loaded[which] = load_policy(paths.get(which))
            if which == "rl2":
                RL2Planner(*loaded[which])
            if which in META_WHICH:
                network, metadata = loaded[which]
                loaded[which] = (network, metadata, meta_planner(paths.get(which), network, metadata).loop)
        except PolicyError as exc:
            problems.append(f"{POLICY_FLAGS[which]} {paths.get(which)}: {exc}")
    if problems:
        raise PolicyError("cannot use the given policies: " + " | ".join(problems))
    return loaded


def build_planner(method: Method, policies: dict[str, tuple]) -> Planner:
    """The planner that runs ``method`` (policies from ``load_policies``)."""
    residual = "policy" in policies and policies["policy"][1].method == "residual"
    if method.kind == "zero-shot":
        return (ResidualPlanner if residual else ZeroShotPlanner)(*policies["policy"])
    if method.kind == "few-shot-sample":
        return (ResidualFewShotPlanner if residual else SampleAndSelectPlanner)(*policies["policy"])
    if method.kind == "few-shot-resolve":
        if not residual:
            raise PolicyError(
                f"{method.name} re-solves around a residual policy's plan, but the given --policy was trained with "
                f"--algo {policies['policy'][1].method}; pass a policy trained with `metacompress train --algo residual` "
                f"(the shipped default is one)"
            )
        return CorrectedSolverPlanner(*policies["policy"])
    if method.kind == "few-shot-rl2":
        return RL2Planner(*policies["rl2"])
    if method.policy in META_WHICH:
        return MetaFewShotPlanner(*policies[method.policy])
    if method.policy in PREDICTOR_WHICH:
        return PredictedScorePlanner(policies[method.policy][0], name=method.name)
    simple = {"uniform": UniformPlanner, "hawq": HawqPlanner, "ddpg": DDPGPlanner, "random": RandomSearchPlanner}
    if method.kind in simple:
        return simple[method.kind](name=method.name)
    return EvolutionPlanner(name=method.name)


@dataclass(frozen=True)
class PlannerEvaluation:
    """One planner on one task: its plan, the recovered model and the timings.

    Args:
        result: what the planner returned (plan, proxy change, evaluations used).
        planning_seconds: wall time of ``plan``.
        final_model: the exported plan after the final KD fine-tune (None when reused).
        final_accuracy: its test-split accuracy.
        finetune_seconds: wall time of export, fine-tune and scoring.
    """

    result: PlanResult
    planning_seconds: float
    final_model: nn.Module | None
    final_accuracy: float
    finetune_seconds: float


def evaluate_planner(
    context: TaskContext,
    planner: Planner,
    evaluations: int,
    seed: int,
    finetune_steps: int,
    finals: dict[tuple, tuple[float, float]] | None = None,
    cold_cache: bool = False,
) -> PlannerEvaluation:
    """Plan ``context`` with ``planner``, then export, recover and score the plan on the test split.

    Args:
        context: the task.
        planner: any ``Planner``.
        evaluations: its proxy-evaluation budget.
        seed: seeds planning and the fine-tune.
        finetune_steps: KD steps of the final recovery (the same for every method).
        finals: a cache ``(plan key, steps, seed) -> (accuracy, seconds)`` shared across
            calls, so two methods that find the same plan share one fine-tune (the model
            is then not kept: ``final_model`` is None).
        cold_cache: clear the evaluator's plan cache first, so each method pays for (and
            is timed on) its own evaluations.
    """
    evaluator = context.evaluator
    if cold_cache:
        evaluator.clear_cache()
    start = time.perf_counter()
    result = planner.plan(context, evaluations, seed)
    planning = time.perf_counter() - start
    key = (result.plan.key(), finetune_steps, seed)
    if finals is not None and key in finals:
        final_accuracy, seconds = finals[key]
        return PlannerEvaluation(result, planning, None, final_accuracy, seconds)
    start = time.perf_counter()
    model = evaluator.final_model(result.plan, finetune_steps, seed)
    final_accuracy = evaluator.test_score(model)
    seconds = time.perf_counter() - start
    if finals is not None:
        finals[key] = (final_accuracy, seconds)
        model = None
    return PlannerEvaluation(result, planning, model, final_accuracy, seconds)

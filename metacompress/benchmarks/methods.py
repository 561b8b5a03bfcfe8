"""The methods ``bench agents`` compares: names, evaluation budgets, planners and their policies.

A method is a planner plus its evaluation budget, named ``<kind>-<N>`` (``random-300``:
random search with 300 proxy evaluations) or by its kind alone when the budget is fixed
(``zero-shot``: 0, ``hawq``: 1, ``uniform``: up to 64 candidates, of which it reports
what it used). Every planner meets the same evaluator and budget projection
(``agents.planner``); only the policy-backed kinds need a saved policy folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from metacompress.agents.ddpg_baseline import DDPGPlanner
from metacompress.agents.hawq import HawqPlanner
from metacompress.agents.learned import RL2Planner, ReptilePlanner, SampleAndSelectPlanner, ZeroShotPlanner
from metacompress.agents.planner import Planner
from metacompress.agents.policy_io import load_policy
from metacompress.agents.search_baselines import EvolutionPlanner, RandomSearchPlanner, UniformPlanner
from metacompress.errors import MetacompressError, PolicyError

# kind -> (policy it needs or None, fixed evaluation budget or None when the name carries it)
KINDS: dict[str, tuple[str | None, int | None]] = {
    "zero-shot": ("policy", 0),
    "few-shot-sample": ("policy", None),
    "few-shot-rl2": ("rl2", None),
    "few-shot-reptile": ("reptile", None),
    "uniform": (None, 64),
    "hawq": (None, 1),
    "ddpg": (None, None),
    "random": (None, None),
    "evolution": (None, None),
    "oracle-evolution": (None, None),
}
LEARNED_KINDS = ("zero-shot", "few-shot-sample", "few-shot-rl2", "few-shot-reptile")
STANDARD_METHODS = (
    "zero-shot", "few-shot-sample-30", "few-shot-rl2-30", "few-shot-reptile-30", "uniform", "hawq",
    "ddpg-300", "random-30", "random-300", "evolution-30", "evolution-300", "oracle-evolution-2000",
)
POLICY_FLAGS = {"policy": "--policy", "rl2": "--rl2-policy", "reptile": "--reptile-policy"}
_BUDGETED = re.compile(r"^(?P<kind>[a-z0-9-]+?)-(?P<evaluations>\d+)$")


class UnknownMethod(MetacompressError):
    """A ``--methods`` entry names no planner kind or lacks its evaluation budget."""


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
        """True for the agent's modes (zero-shot and few-shot), False for baselines."""
        return self.kind in LEARNED_KINDS

    @property
    def policy(self) -> str | None:
        """Which policy folder it needs: ``policy``, ``rl2``, ``reptile`` or None."""
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
        f"method {name!r} is unknown; use one of {', '.join(STANDARD_METHODS)}, or <kind>-<N> with N >= 1 "
        f"evaluations for a kind in: {budgeted}"
    )


@dataclass(frozen=True)
class PolicyPaths:
    """Where the policy-backed methods find their policy folders (None: not given)."""

    policy: Path | None = None
    rl2: Path | None = None
    reptile: Path | None = None

    def get(self, which: str) -> Path | None:
        return getattr(self, which)

    def items(self) -> list[tuple[str, Path | None]]:
        """``(which, folder)`` for ``policy``, ``rl2`` and ``reptile``, in that order."""
        return [(which, self.get(which)) for which in POLICY_FLAGS]


def missing_policies(methods: list[Method], paths: PolicyPaths) -> tuple[list[Method], list[str]]:
    """Split methods into the runnable ones and notes on those skipped for want of a policy folder."""
    runnable, notes = [], []
    for method in methods:
        path = paths.get(method.policy) if method.policy else None
        if method.policy and (path is None or not (path / "policy.json").exists()):
            where = f"no policy at {path}" if path else "no policy given"
            notes.append(f"skipped {method.name}: {where}; pass {POLICY_FLAGS[method.policy]} PATH (a `metacompress train` output)")
        else:
            runnable.append(method)
    return runnable, notes


def load_policies(methods: list[Method], paths: PolicyPaths) -> dict[str, tuple]:
    """Load every policy the methods need, once; ``which -> (network, metadata)``.

    Raises:
        PolicyError: listing every folder that is corrupt, of another version, or of the
            wrong kind for its method (RL^2 needs a recurrent policy).
    """
    loaded, problems = {}, []
    for which in sorted({m.policy for m in methods if m.policy}):
        try:
            loaded[which] = load_policy(paths.get(which))
            if which == "rl2":
                RL2Planner(*loaded[which])
        except PolicyError as exc:
            problems.append(f"{POLICY_FLAGS[which]} {paths.get(which)}: {exc}")
    if problems:
        raise PolicyError("cannot use the given policies: " + " | ".join(problems))
    return loaded


def build_planner(method: Method, policies: dict[str, tuple]) -> Planner:
    """The planner that runs ``method`` (policies from ``load_policies``)."""
    if method.kind == "zero-shot":
        return ZeroShotPlanner(*policies["policy"])
    if method.kind == "few-shot-sample":
        return SampleAndSelectPlanner(*policies["policy"])
    if method.kind == "few-shot-rl2":
        return RL2Planner(*policies["rl2"])
    if method.kind == "few-shot-reptile":
        return ReptilePlanner(*policies["reptile"])
    simple = {"uniform": UniformPlanner, "hawq": HawqPlanner, "ddpg": DDPGPlanner, "random": RandomSearchPlanner}
    if method.kind in simple:
        return simple[method.kind](name=method.name)
    return EvolutionPlanner(name=method.name)

"""The budget, in one place: what it is, its reference, whether a plan fits, and the projection.

A budget is a fraction of the unpruned W8A8 model's cost of one kind (latency, energy,
size or BitOps) on the target. Everything that asks a budget question goes through this
module: the env, the suite generator, every planner, the API and the reports, so there
is one rounding rule for kept channels (``compressors.plan.kept_channels_for``), one
feasibility tolerance and one prune-limit default.

Hard budgets by projection (AMC-style): at unit t the agent's raw choice is accepted if
the plan would still fit with every later unit at maximum compression; otherwise the
choice is moved along the straight line towards this unit's maximum compression, to the
first point that fits (bisection; cost is monotone, so that point exists whenever the
previous step was feasible). Only the coordinates that change this budget's cost move:
a size budget never lowers activation bits. Bits are rounded up to what the hardware
executes. This is AMC's action wall (He et al. 2018, Alg. 1) generalised from one prune
ratio to (prune ratio, weight bits, activation bits) and from FLOPs to any monotone cost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from metacompress.compressors.cost import BUDGET_KINDS, COST_UNITS, REFERENCE_BITS, LayerCostModel, total_cost, unit_cost_shares
from metacompress.compressors.plan import FROZEN_BITS, MAX_BITS, MIN_BITS, kept_channels_for
from metacompress.compressors.spec import ModelSpec, UnitSpec
from metacompress.errors import InfeasibleBudget, InvalidBudget

FEASIBILITY_TOLERANCE = 1e-9
"""Relative slack on "fits": float sums of per-layer costs may differ in the last bits."""
DEFAULT_MAX_PRUNE = 0.75
"""The largest prune ratio any unit may take unless the user allows more (``--max-prune``)."""
BISECTION_STEPS = 7


@dataclass(frozen=True)
class Budget:
    """A hard budget: ``fraction`` of the unpruned W8A8 model's cost of ``kind``.

    Args:
        kind: ``latency`` (ms), ``energy`` (mJ), ``size`` (bits) or ``bitops``.
        fraction: in (0, 1]; 0.25 means a quarter of the reference cost.

    Raises:
        InvalidBudget: for an unknown kind or a fraction outside (0, 1].
    """

    kind: str
    fraction: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise InvalidBudget(f"budget kind {self.kind!r} is unknown; use one of {', '.join(BUDGET_KINDS)} (e.g. latency=0.3)")
        if not 0.0 < self.fraction <= 1.0:
            raise InvalidBudget(
                f"budget fraction {self.fraction} for {self.kind} is outside (0, 1]; it is a fraction of the "
                "unpruned 8-bit model's cost, e.g. latency=0.3"
            )

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse ``kind=fraction`` (e.g. ``size=0.125``)."""
        match = re.fullmatch(r"\s*([a-z]+)\s*=\s*([0-9.eE+-]+)\s*", text)
        try:
            fraction = float(match.group(2)) if match else None
        except ValueError:
            fraction = None
        if fraction is None:
            raise InvalidBudget(f"cannot read budget {text!r}; write KIND=FRACTION, e.g. latency=0.3 or size=0.125")
        return cls(match.group(1), fraction)

    def __str__(self) -> str:
        return f"{self.kind}={self.fraction:g}"


def check_max_prune(max_prune: float) -> None:
    """Raise ``InvalidBudget`` unless ``max_prune`` is a fraction of channels in [0, 1) (1 would remove a whole unit)."""
    if not 0.0 <= max_prune < 1.0:
        raise InvalidBudget(f"max prune ratio {max_prune} is outside [0, 1); pass a fraction of channels, e.g. --max-prune 0.75")


class PlanVectors(NamedTuple):
    """Per-unit (kept channels, weight bits, activation bits): a plan as the accounting reads it."""

    kept: list[int]
    w_bits: list[int]
    a_bits: list[int]


@dataclass(frozen=True)
class UnitChoice:
    """One unit's decision before execution: prune ratio (before rounding) and bit-widths."""

    prune_ratio: float
    w_bits: int
    a_bits: int


def kept_at(unit: UnitSpec, prune_ratio: float, max_prune: float = DEFAULT_MAX_PRUNE) -> int:
    """Channels ``unit`` keeps at ``prune_ratio`` clipped to [0, max_prune]: the one rounding rule.

    The removed count rounds to whole channel steps (``kept_channels_for``); a unit never
    drops below ``min_kept``, and a unit that cannot be pruned keeps every channel.
    """
    ratio = min(max(prune_ratio, 0.0), max_prune) if unit.prunable and not unit.frozen else 0.0
    return kept_channels_for(unit, ratio) if ratio < 1 - unit.min_kept / unit.channels + 1e-12 else unit.min_kept


def reference_vectors(spec: ModelSpec) -> PlanVectors:
    """The unpruned W8A8 plan: the denominator of every budget."""
    bits = [REFERENCE_BITS] * len(spec.units)
    return PlanVectors(list(spec.full_kept), bits, list(bits))


def reference_cost(spec: ModelSpec, kind: str, hardware: LayerCostModel | None = None) -> float:
    """Cost of the unpruned model at W8A8 (ms, mJ, bits or BitOps)."""
    return total_cost(spec, kind, *reference_vectors(spec), hardware)


class BudgetProjector:
    """Prices plans against one budget and projects per-unit choices so the finished plan fits.

    Args:
        spec: the model.
        hardware: the target (its executed bits apply to every budget kind).
        budget: the budget (a fraction of the unpruned W8A8 cost).
        max_prune: the largest prune ratio any unit may take, in [0, 1).
    """

    def __init__(self, spec: ModelSpec, hardware, budget: Budget, max_prune: float = DEFAULT_MAX_PRUNE) -> None:
        check_max_prune(max_prune)
        self.spec, self.hardware, self.budget, self.max_prune = spec, hardware, budget, max_prune
        self.kind = budget.kind
        self.reference_cost = reference_cost(spec, budget.kind, hardware)
        self.limit = budget.fraction * self.reference_cost
        self.decision_units: list[UnitSpec] = [u for u in spec.units if not u.frozen]
        self.min_bits = hardware.executed_bits(MIN_BITS)
        self.moves_a_bits = budget.kind != "size"

    # plan vectors -----------------------------------------------------------------------
    def execute(self, unit: UnitSpec, choice: UnitChoice) -> tuple[int, int, int]:
        """(kept channels, executed w bits, executed a bits) of a choice for ``unit``."""
        kept = kept_at(unit, choice.prune_ratio, self.max_prune)
        return kept, self.hardware.executed_bits(_clip_bits(choice.w_bits)), self.hardware.executed_bits(_clip_bits(choice.a_bits))

    def most_compressed(self, unit: UnitSpec) -> UnitChoice:
        """The unit's maximum compression the action space allows."""
        return UnitChoice(self.max_prune if unit.prunable else 0.0, self.min_bits, self.min_bits)

    def executed_vectors(self, choices: Sequence[UnitChoice]) -> PlanVectors:
        """Per-unit vectors the env executes for one choice per decision unit if projection never acts.

        Frozen units stay whole at 8 bits. If the result fits, every step of an episode fed
        these choices passes the projection untouched (costs are monotone, so each step's
        check, with later units at maximum compression, costs no more) and the episode
        executes exactly these vectors.
        """
        n = len(self.spec.units)
        kept, w, a = list(self.spec.full_kept), [FROZEN_BITS] * n, [FROZEN_BITS] * n
        for unit, choice in zip(self.decision_units, choices):
            kept[unit.index], w[unit.index], a[unit.index] = self.execute(unit, choice)
        return PlanVectors(kept, w, a)

    def initial_vectors(self) -> PlanVectors:
        """Every decision unit at maximum compression; frozen units whole at 8 bits."""
        return self.executed_vectors([self.most_compressed(u) for u in self.decision_units])

    # pricing ----------------------------------------------------------------------------
    def cost(self, kept: Sequence[int], w_bits: Sequence[int], a_bits: Sequence[int]) -> float:
        """Absolute cost of a plan's vectors (ms, mJ, bits or BitOps)."""
        return total_cost(self.spec, self.kind, kept, w_bits, a_bits, self.hardware)

    def cost_ratio(self, kept: Sequence[int], w_bits: Sequence[int], a_bits: Sequence[int]) -> float:
        """A plan's cost as a fraction of the unpruned W8A8 cost."""
        return self.cost(kept, w_bits, a_bits) / self.reference_cost

    def fits(self, kept: Sequence[int], w_bits: Sequence[int], a_bits: Sequence[int]) -> bool:
        """Whether a plan's vectors meet the budget."""
        return self.cost(kept, w_bits, a_bits) <= self.limit * (1 + FEASIBILITY_TOLERANCE)

    def reference_shares(self) -> list[float]:
        """Each unit's share of the unpruned W8A8 cost: where the budget goes before compression."""
        return unit_cost_shares(self.spec, self.kind, *reference_vectors(self.spec), self.hardware)

    def minimum_cost(self) -> float:
        """Cost of the most compressed plan: below it no plan exists (costs are monotone)."""
        return self.cost(*self.initial_vectors())

    def is_feasible(self) -> bool:
        """Whether the most compressed plan meets the budget."""
        return self.fits(*self.initial_vectors())

    def check_feasible(self, where: str) -> None:
        """Raise ``InfeasibleBudget`` stating the minimum if not even maximum compression fits."""
        minimum = self.minimum_cost()
        if not self.is_feasible():
            unit = COST_UNITS[self.kind]
            least = minimum / self.reference_cost
            raise InfeasibleBudget(
                f"{self.kind} budget {self.budget.fraction:g} of the unpruned W8A8 cost ({self.limit:.6g} {unit}) is infeasible for "
                f"{where}: the most compressed plan (prune {self.max_prune:g}, {self.min_bits}-bit) costs {minimum:.6g} {unit}, "
                f"{least:.4g} of W8A8. Raise the budget to at least {self.kind}={math.ceil(least * 1000) / 1000:g}, or allow "
                "larger prune ratios (--max-prune)."
            )

    # the projection ---------------------------------------------------------------------
    def project(
        self, unit: UnitSpec, raw: UnitChoice, kept: list[int], w: list[int], a: list[int]
    ) -> tuple[UnitChoice, tuple[int, int, int]]:
        """The feasible choice closest to ``raw`` along the line to maximum compression.

        ``kept``/``w``/``a`` hold the decided units' values and maximum compression for the
        rest (this unit's entry is overwritten). Returns the executed choice and its
        (kept, w bits, a bits).
        """
        target = self.most_compressed(unit)

        def at(fraction: float) -> UnitChoice:
            return UnitChoice(
                raw.prune_ratio + fraction * (target.prune_ratio - raw.prune_ratio),
                round(raw.w_bits + fraction * (target.w_bits - raw.w_bits)),
                round(raw.a_bits + fraction * (target.a_bits - raw.a_bits)) if self.moves_a_bits else raw.a_bits,
            )

        def fits(choice: UnitChoice) -> bool:
            kept[unit.index], w[unit.index], a[unit.index] = self.execute(unit, choice)
            return self.fits(kept, w, a)

        if fits(raw):
            return raw, self.execute(unit, raw)
        low, high = 0.0, 1.0  # low infeasible, high feasible
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            if fits(at(middle)):
                high = middle
            else:
                low = middle
        chosen = at(high)
        if not fits(chosen):  # only if the invariant was broken upstream: compress fully
            chosen = UnitChoice(target.prune_ratio, target.w_bits, target.a_bits if self.moves_a_bits else raw.a_bits)
            fits(chosen)
        return chosen, self.execute(unit, chosen)


def _clip_bits(bits: int) -> int:
    return int(min(max(bits, MIN_BITS), MAX_BITS))

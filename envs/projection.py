"""Hard budgets by projection: every executed action keeps the episode feasible (AMC-style).

At unit t the agent's raw choice is accepted if the plan would still fit with every
later unit at maximum compression; otherwise the choice is moved along the straight line
towards this unit's maximum compression, to the first point that fits (bisection; cost
is monotone, so that point exists whenever the previous step was feasible). Only the
coordinates that change this budget's cost move: a size budget never lowers activation
bits. Bits are rounded up to what the hardware executes.

This is AMC's action wall (He et al. 2018, Alg. 1) generalised from one prune ratio to
(prune ratio, weight bits, activation bits) and from FLOPs to any monotone cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from metacompress.compressors.cost import total_cost
from metacompress.compressors.hardware import Hardware
from metacompress.compressors.plan import FROZEN_BITS, MAX_BITS, MIN_BITS, kept_channels_for
from metacompress.compressors.spec import ModelSpec, UnitSpec
from metacompress.errors import InfeasibleBudget

BISECTION_STEPS = 7
FEASIBILITY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Choice:
    """One unit's decision: prune ratio (before rounding) and bit-widths."""

    prune_ratio: float
    w_bits: int
    a_bits: int


class BudgetProjector:
    """Projects per-unit choices so the finished plan meets ``budget`` (absolute cost).

    Args:
        spec: the model.
        hardware: the target (its executed bits apply to every budget kind).
        kind: budget kind.
        budget: the absolute cost limit (ms, mJ, bits or BitOps).
        max_prune: the largest prune ratio any unit may take.
    """

    def __init__(self, spec: ModelSpec, hardware: Hardware, kind: str, budget: float, max_prune: float) -> None:
        self.spec, self.hardware, self.kind, self.budget, self.max_prune = spec, hardware, kind, budget, max_prune
        self.decision_units: list[UnitSpec] = [u for u in spec.units if not u.frozen]
        self.min_bits = hardware.executed_bits(MIN_BITS)
        self.moves_a_bits = kind != "size"

    # plan vectors -----------------------------------------------------------------------
    def execute(self, unit: UnitSpec, choice: Choice) -> tuple[int, int, int]:
        """(kept channels, executed w bits, executed a bits) of a choice for ``unit``."""
        ratio = min(max(choice.prune_ratio, 0.0), self.max_prune) if unit.prunable else 0.0
        kept = kept_channels_for(unit, ratio) if ratio < 1 - unit.min_kept / unit.channels + 1e-12 else unit.min_kept
        return kept, self.hardware.executed_bits(_clip_bits(choice.w_bits)), self.hardware.executed_bits(_clip_bits(choice.a_bits))

    def most_compressed(self, unit: UnitSpec) -> Choice:
        return Choice(self.max_prune if unit.prunable else 0.0, self.min_bits, self.min_bits)

    def initial_vectors(self) -> tuple[list[int], list[int], list[int]]:
        """Every decision unit at maximum compression; frozen units whole at 8 bits."""
        kept, w, a = list(self.spec.full_kept), [FROZEN_BITS] * len(self.spec.units), [FROZEN_BITS] * len(self.spec.units)
        for unit in self.decision_units:
            kept[unit.index], w[unit.index], a[unit.index] = self.execute(unit, self.most_compressed(unit))
        return kept, w, a

    def cost(self, kept, w, a) -> float:
        return total_cost(self.spec, self.kind, kept, w, a, self.hardware)

    def minimum_cost(self) -> float:
        """Cost of the most compressed plan: below it no plan exists."""
        return self.cost(*self.initial_vectors())

    def check_feasible(self, where: str) -> None:
        """Raise ``InfeasibleBudget`` stating the minimum if not even maximum compression fits."""
        minimum = self.minimum_cost()
        if minimum > self.budget * (1 + FEASIBILITY_TOLERANCE):
            raise InfeasibleBudget(
                f"{self.kind} budget {self.budget:.6g} is infeasible for {where}: the most compressed plan "
                f"(prune {self.max_prune:g}, {self.min_bits}-bit) costs {minimum:.6g}. Raise the budget to at least "
                f"{minimum / self.budget:.3f}x its value, or allow larger prune ratios (max_prune)."
            )

    # the projection ---------------------------------------------------------------------
    def project(self, unit: UnitSpec, raw: Choice, kept: list[int], w: list[int], a: list[int]) -> tuple[Choice, tuple[int, int, int]]:
        """The feasible choice closest to ``raw`` along the line to maximum compression.

        ``kept``/``w``/``a`` hold the decided units' values and maximum compression for the
        rest (this unit's entry is overwritten). Returns the executed choice and its
        (kept, w bits, a bits).
        """
        target = self.most_compressed(unit)

        def at(fraction: float) -> Choice:
            return Choice(
                raw.prune_ratio + fraction * (target.prune_ratio - raw.prune_ratio),
                round(raw.w_bits + fraction * (target.w_bits - raw.w_bits)),
                round(raw.a_bits + fraction * (target.a_bits - raw.a_bits)) if self.moves_a_bits else raw.a_bits,
            )

        def fits(choice: Choice) -> bool:
            kept[unit.index], w[unit.index], a[unit.index] = self.execute(unit, choice)
            return self.cost(kept, w, a) <= self.budget * (1 + FEASIBILITY_TOLERANCE)

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
            chosen = Choice(target.prune_ratio, target.w_bits, target.a_bits if self.moves_a_bits else raw.a_bits)
            fits(chosen)
        return chosen, self.execute(unit, chosen)


def _clip_bits(bits: int) -> int:
    return int(min(max(bits, MIN_BITS), MAX_BITS))

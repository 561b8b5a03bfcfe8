"""Accuracy-target mode: the cheapest plan whose recovered metric stays within a drop (``--max-drop``).

Production tools take a tolerable loss instead of a budget (INC ``tolerable_loss``, NNCF
``max_drop``, AIMET ``allowed_accuracy_drop``). Here the planner still plans under a budget
of one kind; this module walks the budget fraction to find the smallest one whose plan,
exported and recovered (the same KD fine-tune the final model gets), keeps its metric on
the search split within the drop of the original's:

1. the most compressed feasible fraction: if its plan meets the target, nothing is cheaper;
2. fraction 1.0 (the W8A8 model's cost): if even that misses, the target is out of reach;
3. bisection (geometric, since costs are ratios) between the largest failing fraction and
   the cost of the cheapest passing plan, up to ``MAX_CANDIDATES`` plans in all.

The recovered metric is not monotone in the budget, so the answer is the cheapest plan that
met the target among all tried; when none did, the best-scoring plan, flagged. The walk is
returned as the trade-off curve (cost vs metric) the report tabulates and plots.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from typing import Callable

from metacompress.errors import MetacompressError

log = logging.getLogger(__name__)

MAX_CANDIDATES = 6
"""Plans tried at most: each costs a planning run and a recovery fine-tune."""


@dataclass(frozen=True)
class MaxDrop:
    """How far the metric may fall from the original model's.

    Args:
        value: the allowed drop, >= 0: points (hundredths of the metric's unit, so a
            percentage point of an accuracy in [0, 1]) or, if ``relative``, percent of the
            original value.
        relative: ``value`` is a percentage of the original metric.
    """

    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise MetacompressError(f"max drop {self.value} must be a finite number >= 0, e.g. --max-drop 1.0 (points) or 1% (relative)")

    @classmethod
    def parse(cls, text: str | float | MaxDrop) -> MaxDrop:
        """``1.0`` (points), ``"1.0"`` or ``"1%"`` (relative to the original metric)."""
        if isinstance(text, MaxDrop):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(float(text))
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(%?)\s*", str(text))
        if not match:
            raise MetacompressError(f"cannot read max drop {text!r}; write points (1.0: one percentage point of accuracy) or a percentage (1%)")
        return cls(float(match.group(1)), relative=bool(match.group(2)))

    def floor(self, original: float) -> float:
        """The lowest metric that meets the target, for an original metric ``original``."""
        if self.relative:
            return original - abs(original) * self.value / 100
        return original - self.value / 100

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g} points"


@dataclass(frozen=True)
class TradeoffPoint:
    """One plan of the walk: its budget fraction, actual cost ratio and recovered search-split metric."""

    fraction: float
    cost_ratio: float
    metric: float
    meets: bool


@dataclass(frozen=True)
class TargetWalk:
    """The budgets tried and the choice.

    Args:
        points: every plan tried, in the order tried.
        chosen: index into ``points`` of the returned plan.
        met: whether the chosen plan meets the target (False: best effort).
        original: the original model's metric on the search split.
        floor: the lowest metric meeting the target.
    """

    points: tuple[TradeoffPoint, ...]
    chosen: int
    met: bool
    original: float
    floor: float

    @property
    def message(self) -> str:
        best = self.points[self.chosen]
        if self.met:
            return (f"cheapest plan within the drop: budget fraction {best.fraction:.4g} (cost {best.cost_ratio:.4f} of W8A8), "
                    f"recovered metric {best.metric:.4f} >= {self.floor:.4f}")
        return (f"no plan met the target (metric >= {self.floor:.4f}, original {self.original:.4f}) in {len(self.points)} tries; "
                f"returning the best effort: fraction {best.fraction:.4g}, metric {best.metric:.4f}. Allow a larger drop, "
                "more fine-tune steps (--finetune-steps) or more planner evaluations")

    def rows(self) -> list[dict]:
        """The trade-off curve as rows sorted by cost (what the report tabulates)."""
        order = sorted(range(len(self.points)), key=lambda i: self.points[i].cost_ratio)
        return [{**asdict(self.points[i]), "chosen": i == self.chosen} for i in order]


def walk_budgets(attempt: Callable[[float], tuple[float, float]], lowest: float, original: float, max_drop: MaxDrop,
                 candidates: int = MAX_CANDIDATES) -> TargetWalk:
    """Search the budget fraction for the cheapest plan meeting ``max_drop`` (steps in the module docstring).

    Args:
        attempt: ``fraction -> (cost_ratio, recovered metric)`` for the planner's plan at that budget.
        lowest: the smallest feasible fraction (the most compressed plan's cost ratio), in (0, 1].
        original: the original model's metric on the same split.
        max_drop: the allowed drop.
        candidates: plans to try at most (>= 2).
    """
    if candidates < 2:
        raise MetacompressError(f"accuracy-target mode needs at least 2 candidate plans, got {candidates}")
    floor = max_drop.floor(original)
    points: list[TradeoffPoint] = []

    def tried(fraction: float) -> TradeoffPoint:
        cost_ratio, metric = attempt(fraction)
        point = TradeoffPoint(fraction, cost_ratio, metric, metric >= floor)
        log.info("max-drop walk: fraction %.4g -> cost %.4f, metric %.4f (%s)", fraction, cost_ratio, metric, "meets" if point.meets else "misses")
        points.append(point)
        return point

    low, high = min(max(lowest, 1e-6), 1.0), 1.0
    if not tried(low).meets and low < high and (top := tried(high)).meets:
        high = top.cost_ratio  # a passing plan's own cost bounds the answer: the budget above it was unused
        while len(points) < candidates and low < high:
            middle = math.sqrt(low * high)
            point = tried(middle)
            if point.meets:
                high = min(middle, point.cost_ratio)
            else:
                low = middle
    passing = [i for i, p in enumerate(points) if p.meets]
    if passing:
        chosen = min(passing, key=lambda i: (points[i].cost_ratio, points[i].fraction))
    else:
        chosen = max(range(len(points)), key=lambda i: (points[i].metric, -points[i].cost_ratio))
    walk = TargetWalk(tuple(points), chosen, bool(passing), original, floor)
    (log.info if walk.met else log.warning)(walk.message)
    return walk

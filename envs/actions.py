"""The action codec: an action in [-1, 1]^3 per unit, read around an anchor of compression levels.

Each coordinate (prune ratio, weight bits, activation bits) lives on a compression level
in [0, 1] (0 = none, 1 = the most the action space allows). An action moves the level
piecewise-linearly around the unit's *anchor*: 0 keeps the anchor's level, +1 goes to
maximum compression, -1 to none. Levels become a prune ratio (``level * max_prune``) and
bits (``8 - level * 6`` in seven equal-width bins, HAQ's mapping).

Two anchors exist. ``ActionCodec.uniform`` centres every unit on the uniform setting that
just fits the budget, so an untrained policy starts from a feasible uniform plan.
``ActionCodec.at_choices`` centres each unit on a given plan (e.g. the exact solver's), so
action 0 reproduces that plan and a policy learns residual corrections to it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metacompress.compressors.budget import BudgetProjector, UnitChoice
from metacompress.compressors.plan import MAX_BITS, MIN_BITS

BIT_LEVELS = MAX_BITS - MIN_BITS + 1
UNIFORM_BISECTION_STEPS = 30


def levels_to_choice(levels: np.ndarray, max_prune: float) -> UnitChoice:
    """Compression levels in [0, 1]^3 (0 = none, 1 = most) to a choice."""
    bits = [MAX_BITS - min(int(level * BIT_LEVELS), BIT_LEVELS - 1) for level in levels[1:]]
    return UnitChoice(float(levels[0]) * max_prune, bits[0], bits[1])


def choice_to_levels(choice: UnitChoice, max_prune: float) -> np.ndarray:
    """Levels that map to ``choice`` (bits at their bin centre): inverse of ``levels_to_choice``."""
    prune = choice.prune_ratio / max_prune if max_prune else 0.0
    return np.asarray([prune] + [(MAX_BITS - b + 0.5) / BIT_LEVELS for b in (choice.w_bits, choice.a_bits)])


class ActionCodec:
    """Reads actions as choices around per-unit anchor levels, and writes choices back as actions.

    Args:
        anchor: compression levels, shape (3,) for every unit alike or (decisions, 3).
        max_prune: the largest prune ratio (level 1 of the prune coordinate).
    """

    def __init__(self, anchor: np.ndarray, max_prune: float) -> None:
        self.anchor = np.clip(np.asarray(anchor, dtype=np.float64), 0.0, 1.0)
        self.max_prune = max_prune

    @classmethod
    def uniform(cls, projector: BudgetProjector) -> ActionCodec:
        """Anchor at the least compression level, equal in every coordinate that prices this
        budget, at which a uniform plan fits (bisection; cost is monotone). Activation bits
        stay at level 0 for size budgets, which they do not change."""
        moves_a = float(projector.moves_a_bits)

        def levels(level: float) -> np.ndarray:
            return np.asarray([level, level, level * moves_a])

        def fits(level: float) -> bool:
            choice = levels_to_choice(levels(level), projector.max_prune)
            return projector.fits(*projector.executed_vectors([choice] * len(projector.decision_units)))

        if fits(0.0):
            return cls(levels(0.0), projector.max_prune)
        low, high = 0.0, 1.0
        for _ in range(UNIFORM_BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (low, middle) if fits(middle) else (middle, high)
        return cls(levels(high), projector.max_prune)

    @classmethod
    def at_choices(cls, choices: Sequence[UnitChoice], max_prune: float) -> ActionCodec:
        """Anchor each decision unit on its choice: action 0 reproduces the plan."""
        return cls(np.stack([choice_to_levels(c, max_prune) for c in choices]), max_prune)

    def anchor_of(self, position: int) -> np.ndarray:
        """Anchor levels (3,) of the decision unit at ``position``."""
        return self.anchor if self.anchor.ndim == 1 else self.anchor[position]

    @property
    def mean_level(self) -> float:
        """The prune-and-weight anchor level averaged over units (an observation feature)."""
        return float(np.mean(self.anchor[..., :2]))

    def choice(self, action: np.ndarray, position: int) -> UnitChoice:
        """The choice an action (float32, as the env receives it) means at ``position``."""
        a = np.clip(np.asarray(action, dtype=np.float32).astype(np.float64), -1.0, 1.0)
        anchor = self.anchor_of(position)
        levels = np.where(a >= 0, anchor + a * (1.0 - anchor), anchor * (1.0 + a))
        return levels_to_choice(levels, self.max_prune)

    def action(self, choice: UnitChoice, position: int) -> np.ndarray:
        """The action that maps to ``choice`` at ``position`` (bits at their bin centre)."""
        action = []
        for level, anchor in zip(choice_to_levels(choice, self.max_prune), self.anchor_of(position)):
            if level >= anchor:
                action.append((level - anchor) / (1.0 - anchor) if anchor < 1.0 else 0.0)
            else:
                action.append(level / anchor - 1.0)
        return np.clip(np.asarray(action), -1.0, 1.0).astype(np.float32)

"""Everything an episode on one task needs, computed once: costs, features, projection.

Building a ``TaskContext`` prices the model on the hardware, checks the budget is
feasible (refusing it with the minimum stated if not), and precomputes every static
observation feature, so an episode's steps only do the budget projection and a few
whole-plan cost sums.
"""

from __future__ import annotations

import numpy as np

from metacompress.compressors.cost import layer_costs, total_cost
from metacompress.compressors.hardware import Hardware, hardware_embedding
from metacompress.compressors.spec import ModelSpec
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.features import budget_features, unit_features
from metacompress.envs.probes import ModelProbes
from metacompress.envs.projection import BudgetProjector
from metacompress.envs.tasks import Budget

DEFAULT_MAX_PRUNE = 0.75


def budget_projector(spec: ModelSpec, hardware: Hardware, budget: Budget, max_prune: float) -> tuple[float, BudgetProjector]:
    """The unpruned W8A8 reference cost and the projector that enforces ``budget``.

    Needs only the structure and the hardware, so a caller can refuse an infeasible budget
    (``projector.check_feasible``) before any probe or evaluation runs.
    """
    eights = [8] * len(spec.units)
    reference = total_cost(spec, budget.kind, spec.full_kept, eights, eights, hardware)
    return reference, BudgetProjector(spec, hardware, budget.kind, budget.fraction * reference, max_prune)


class TaskContext:
    """One task, ready to run: evaluator, hardware, budget, projector and static features.

    Args:
        evaluator: the model's evaluator (shared by every task on that model).
        probes: the model's sensitivity probes.
        hardware: the target.
        budget: the budget, a fraction of the unpruned W8A8 cost.
        max_prune: the largest prune ratio any unit may take.
        name: how errors and reports name the task.

    Raises:
        InfeasibleBudget: if even the most compressed plan exceeds the budget.
    """

    def __init__(
        self,
        evaluator: ModelEvaluator,
        probes: ModelProbes,
        hardware: Hardware,
        budget: Budget,
        max_prune: float = DEFAULT_MAX_PRUNE,
        name: str = "this task",
    ) -> None:
        spec = evaluator.spec
        self.evaluator, self.probes, self.hardware, self.budget, self.max_prune, self.name = (
            evaluator, probes, hardware, budget, max_prune, name,
        )
        eights = [8] * len(spec.units)
        self.reference_cost, self.projector = budget_projector(spec, hardware, budget, max_prune)
        self.budget_cost = self.projector.budget
        self.projector.check_feasible(name)
        self.decision_units = self.projector.decision_units
        self.anchor_levels = self._anchor_levels()
        self.unit_features = unit_features(spec, hardware, budget.kind, probes, self.decision_units)
        minimum_fraction = self.projector.minimum_cost() / self.reference_cost
        self.budget_features = budget_features(budget.kind, budget.fraction, minimum_fraction, float(self.anchor_levels[0]))
        self.embedding = hardware_embedding(hardware).astype(np.float32)
        shares = np.zeros(len(spec.units))
        for layer, cost in zip(spec.layers, layer_costs(spec, budget.kind, spec.full_kept, eights, eights, hardware)):
            shares[layer.unit] += cost
        shares /= max(shares.sum(), 1e-30)
        decision_shares = [shares[u.index] for u in self.decision_units]
        # share of the W8A8 cost in decision t and the ones after it
        self.rest_shares = np.cumsum(decision_shares[::-1])[::-1].astype(np.float32)

    @property
    def spec(self):
        return self.evaluator.spec

    def uniform_fits(self, levels: np.ndarray) -> bool:
        """Whether every decision unit at compression ``levels`` (prune, w, a) fits the budget."""
        from metacompress.envs.compression_env import levels_to_choice

        choice = levels_to_choice(levels, self.max_prune)
        kept, w, a = self.projector.initial_vectors()
        for unit in self.decision_units:
            kept[unit.index], w[unit.index], a[unit.index] = self.projector.execute(unit, choice)
        return self.projector.cost(kept, w, a) <= self.budget_cost * (1 + 1e-9)

    def _anchor_levels(self) -> np.ndarray:
        """The least compression level, equal in every coordinate that prices this budget,
        at which a uniform plan fits: where actions are centred (bisection; cost is monotone).
        Activation bits stay at level 0 for size budgets, which they do not change."""
        moves_a = float(self.projector.moves_a_bits)
        levels = lambda level: np.asarray([level, level, level * moves_a])  # noqa: E731
        if self.uniform_fits(levels(0.0)):
            return levels(0.0)
        low, high = 0.0, 1.0
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (low, middle) if self.uniform_fits(levels(middle)) else (middle, high)
        return levels(high)

    def cost_ratio(self, kept, w_bits, a_bits) -> float:
        """A plan's cost as a fraction of the unpruned W8A8 cost."""
        return total_cost(self.spec, self.budget.kind, kept, w_bits, a_bits, self.hardware) / self.reference_cost

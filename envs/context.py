"""Everything an episode on one task needs, computed once: costs, features, projection.

Building a ``TaskContext`` prices the model on the hardware, checks the budget is
feasible (refusing it with the minimum stated if not), and precomputes every static
observation feature, so an episode's steps only do the budget projection and a few
whole-plan cost sums.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from metacompress.compressors.budget import DEFAULT_MAX_PRUNE, Budget, BudgetProjector, UnitChoice
from metacompress.compressors.hardware import Hardware, hardware_embedding
from metacompress.compressors.spec import ModelSpec
from metacompress.envs.actions import ActionCodec
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.features import budget_features, network_table, unit_features
from metacompress.envs.probes import ModelProbes


class TaskContext:
    """One task, ready to run: evaluator, hardware, budget, projector, action codec and static features.

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
        self.projector = BudgetProjector(spec, hardware, budget, max_prune)
        self.projector.check_feasible(name)
        self.reference_cost = self.projector.reference_cost
        self.budget_cost = self.projector.limit
        self.decision_units = self.projector.decision_units
        self.codec = ActionCodec.uniform(self.projector)
        self.unit_features = unit_features(self.projector, probes)
        minimum_fraction = self.projector.minimum_cost() / self.reference_cost
        self.budget_features = budget_features(budget.kind, budget.fraction, minimum_fraction, self.codec.mean_level)
        self.embedding = hardware_embedding(hardware).astype(np.float32)
        self.baseline_change = 0.0
        self._table: np.ndarray | None = None
        shares = self.projector.reference_shares()
        decision_shares = [shares[u.index] for u in self.decision_units]
        # share of the W8A8 cost in decision t and the ones after it
        self.rest_shares = np.cumsum(decision_shares[::-1])[::-1].astype(np.float32)

    @property
    def spec(self) -> ModelSpec:
        return self.evaluator.spec

    @property
    def network_table(self) -> np.ndarray:
        """The padded unit table of the ``network`` observation (see ``envs.features``)."""
        if self._table is None:
            self._table = network_table(self.unit_features, self.codec.anchor)
        return self._table

    def anchored(self, choices: Sequence[UnitChoice], baseline_change: float) -> TaskContext:
        """The same task with actions read around ``choices`` and rewards relative to ``baseline_change``.

        A residual planner's view of the task: action 0 reproduces ``choices`` (e.g. the
        exact solver's plan) and the reward is a plan's proxy change minus the anchor
        plan's (a per-task baseline, so task difficulty does not drown the signal).
        """
        view = copy.copy(self)
        view.codec = ActionCodec.at_choices(choices, self.max_prune)
        view.baseline_change = float(baseline_change)
        view._table = None
        return view

    def cost_ratio(self, kept: Sequence[int], w_bits: Sequence[int], a_bits: Sequence[int]) -> float:
        """A plan's cost as a fraction of the unpruned W8A8 cost."""
        return self.projector.cost_ratio(kept, w_bits, a_bits)

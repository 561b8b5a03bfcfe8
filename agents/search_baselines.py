"""Search baselines: the best uniform setting, random search and evolutionary search.

All three score plans through ``CompressionEnv`` episodes (``planner.ScoreBook``), so
they share the learned agent's evaluator and budget projection, count evaluations the
same way (distinct executed plans; see ``agents.planner``) and return the best plan by
proxy accuracy change, the first one found on ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metacompress.agents.planner import PlanResult, ScoreBook, check_evaluations
from metacompress.compressors.budget import UnitChoice
from metacompress.compressors.plan import MAX_BITS, MIN_BITS
from metacompress.envs.context import TaskContext
from metacompress.errors import MetacompressError

PRUNE_STEP = 0.125
MAX_EPISODE_FACTOR = 4


def prune_grid(max_prune: float, step: float = PRUNE_STEP) -> list[float]:
    """Prune ratios 0, step, 2 step, ... below ``max_prune``, and ``max_prune`` itself.

    Raises:
        MetacompressError: if ``step`` is not in (0, 1].
    """
    if not 0.0 < step <= 1.0:
        raise MetacompressError(f"prune grid step {step} is outside (0, 1]; use e.g. 0.125")
    count = int(np.floor(max_prune / step + 1e-9))
    grid = [round(i * step, 10) for i in range(count + 1)]
    return grid if grid[-1] >= max_prune - 1e-9 else grid + [max_prune]


def executed_bit_levels(context: TaskContext) -> list[int]:
    """The distinct bit-widths the hardware executes (2-8 rounded up to supported widths)."""
    return sorted({context.hardware.executed_bits(b) for b in range(MIN_BITS, MAX_BITS + 1)})


@dataclass(frozen=True)
class UniformCandidate:
    """One uniform setting that fits the budget without projection."""

    prune_ratio: float
    w_bits: int
    a_bits: int
    cost_ratio: float
    actions: np.ndarray


@dataclass(frozen=True)
class UniformPlanner:
    """The best uniform setting that fits: one prune ratio and bit pair for every unit.

    What users do without a search (DESIGN.md section 6; the "largest uniform setting
    that fits" of the baselines survey): for each executed (w bits, a bits) pair the least
    pruned ratio of the grid whose plan fits the budget *without* projection is a
    candidate; candidates that another one dominates (at least as many bits of both kinds,
    no more pruning) are dropped; the rest are evaluated in order of decreasing cost
    (the largest settings first) and the best by proxy is returned. The grid always holds
    ``max_prune`` and the hardware's fewest bits, i.e. the context's most compressed plan,
    which the context has checked to fit, so a candidate always exists. ``seed`` is unused:
    the planner is deterministic.

    Args:
        prune_step: spacing of the prune-ratio grid (0 to the task's max prune).
        name: label in reports.
    """

    prune_step: float = PRUNE_STEP
    name: str = "uniform"

    def candidates(self, context: TaskContext) -> list[UniformCandidate]:
        """Undominated fitting uniform settings, largest cost first."""
        n = len(context.decision_units)
        found: dict[tuple, UniformCandidate] = {}
        for w_bits in executed_bit_levels(context):
            for a_bits in executed_bit_levels(context):
                for ratio in prune_grid(context.max_prune, self.prune_step):
                    action = context.codec.action(UnitChoice(ratio, w_bits, a_bits), 0)
                    vectors = context.projector.executed_vectors([context.codec.choice(action, 0)] * n)
                    if context.projector.fits(*vectors):
                        candidate = UniformCandidate(ratio, w_bits, a_bits, context.cost_ratio(*vectors), np.tile(action, (n, 1)))
                        found.setdefault(tuple(map(tuple, vectors)), candidate)
                        break
        settings = list(found.values())
        undominated = [
            c for c in settings
            if not any(
                o is not c and o.w_bits >= c.w_bits and o.a_bits >= c.a_bits and o.prune_ratio <= c.prune_ratio
                for o in settings
            )
        ]
        return sorted(undominated, key=lambda c: (-c.cost_ratio, -c.w_bits, -c.a_bits))

    def plan(self, context: TaskContext, evaluations: int = 64, seed: int = 0) -> PlanResult:
        """Evaluate up to ``evaluations`` candidates (largest first; 64, the registry's budget, by default); return the best."""
        check_evaluations(self.name, evaluations)
        candidates = self.candidates(context)
        chosen = candidates[:evaluations]
        book = ScoreBook(context, evaluations, max_episodes=len(chosen))
        scores = book.run_batch([candidate.actions for candidate in chosen])
        best = chosen[int(np.argmax(scores))]  # the first best, as the book keeps
        return book.result(
            candidates=len(candidates),
            setting={"prune_ratio": best.prune_ratio, "w_bits": best.w_bits, "a_bits": best.a_bits},
        )


@dataclass(frozen=True)
class RandomSearchPlanner:
    """Random search: uniform random raw actions, projected by the env; best by proxy.

    The cheapest honest control (Li and Talwalkar, UAI 2019; DESIGN.md section 6): each
    episode draws every unit's action uniformly from [-1, 1]^3, so late units absorb the
    budget through the AMC-style projection, as for any agent.

    Args:
        max_episode_factor: episodes allowed per evaluation (repeated plans are free but
            take an episode; this bounds the loop when few distinct plans exist).
        name: label in reports.
    """

    max_episode_factor: int = MAX_EPISODE_FACTOR
    name: str = "random"

    def plan(self, context: TaskContext, evaluations: int, seed: int = 0) -> PlanResult:
        """Score random plans until ``evaluations`` distinct ones; return the best."""
        check_evaluations(self.name, evaluations)
        rng = np.random.default_rng(seed)
        shape = (len(context.decision_units), 3)
        book = ScoreBook(context, evaluations, self.max_episode_factor * evaluations)
        while not book.exhausted:  # in batches of what is left: the same draws, in the same order, as one at a time
            book.run_batch([rng.uniform(-1.0, 1.0, shape).astype(np.float32) for _ in range(book.room())])
        return book.result()


@dataclass(frozen=True)
class EvolutionPlanner:
    """Steady-state evolutionary search over raw action sequences (OFA / APQ style).

    A genome is one raw action per decision unit (an (n, 3) array in [-1, 1]). The first
    ``population`` evaluations are random genomes; after that each evaluation is one child:
    two parents by tournament selection, uniform crossover of whole per-unit genes, then
    Gaussian mutation of the genes of about one unit (at least one), clipped to [-1, 1].
    A child replaces the population's worst member if it scores better (elitist, so the
    best plan found is never lost). A child whose executed plan was already scored (free,
    but a wasted episode: a converged population, or raw genes the projection overrides)
    doubles the mutation scale of the next child, up to 1; a new plan resets it. Plans go
    through the env's projection like any other.

    Args:
        population: population size (capped at the evaluation budget).
        tournament: contestants per tournament.
        mutation_sigma: std of the Gaussian mutation in action units (a bit-width bin is
            2/7 ~ 0.29 wide, so 0.15 moves bits by about one level half of the time).
        crossover_rate: probability a child is a crossover (else a mutated copy of one parent).
        max_episode_factor: episodes allowed per evaluation (as ``RandomSearchPlanner``).
        name: label in reports.
    """

    population: int = 16
    tournament: int = 3
    mutation_sigma: float = 0.15
    crossover_rate: float = 0.9
    max_episode_factor: int = MAX_EPISODE_FACTOR
    name: str = "evolution"

    def __post_init__(self) -> None:
        problems = []
        if self.population < 2:
            problems.append(f"population {self.population} < 2")
        if self.tournament < 1:
            problems.append(f"tournament {self.tournament} < 1")
        if self.mutation_sigma <= 0:
            problems.append(f"mutation_sigma {self.mutation_sigma} <= 0")
        if not 0.0 <= self.crossover_rate <= 1.0:
            problems.append(f"crossover_rate {self.crossover_rate} outside [0, 1]")
        if problems:
            raise MetacompressError(
                "EvolutionPlanner settings are invalid: " + "; ".join(problems)
                + "; e.g. population=16, tournament=3, mutation_sigma=0.15, crossover_rate=0.9"
            )

    def plan(self, context: TaskContext, evaluations: int, seed: int = 0) -> PlanResult:
        """Evolve for ``evaluations`` distinct plans; return the best."""
        check_evaluations(self.name, evaluations)
        rng = np.random.default_rng(seed)
        n = len(context.decision_units)
        book = ScoreBook(context, evaluations, self.max_episode_factor * evaluations)
        size = min(self.population, evaluations)
        # the random first generation is scored as one batch; children depend on the scores before them
        genomes = [rng.uniform(-1.0, 1.0, (n, 3)).astype(np.float32) for _ in range(min(size, book.room()))]
        fitness = book.run_batch(genomes)
        sigma = self.mutation_sigma
        while not book.exhausted:
            child = self._child(rng, genomes, fitness, sigma)
            scored = book.used
            score = book.run(child)
            sigma = self.mutation_sigma if book.used > scored else min(2.0 * sigma, 1.0)
            worst = int(np.argmin(fitness))
            if score > fitness[worst]:
                genomes[worst], fitness[worst] = child, score
        return book.result(population=size)

    def _select(self, rng: np.random.Generator, fitness: list[float]) -> int:
        contestants = rng.choice(len(fitness), size=min(self.tournament, len(fitness)), replace=False)
        return int(max(contestants, key=lambda i: (fitness[i], -i)))

    def _child(self, rng: np.random.Generator, genomes: list[np.ndarray], fitness: list[float], sigma: float) -> np.ndarray:
        first = genomes[self._select(rng, fitness)]
        n = first.shape[0]
        if rng.random() < self.crossover_rate:
            second = genomes[self._select(rng, fitness)]
            child = np.where((rng.random(n) < 0.5)[:, None], first, second)
        else:
            child = first.copy()
        mutate = rng.random(n) < 1.0 / n
        mutate[rng.integers(n)] = True
        child = child + mutate[:, None] * rng.normal(0.0, sigma, child.shape)
        return np.clip(child, -1.0, 1.0).astype(np.float32)

"""HAWQ-V3-style baseline: Hessian-weighted perturbation per unit option, an integer program under the budget.

HAWQ-V2 (Dong et al., NeurIPS 2020, section 3) scores a layer quantized to ``b`` bits by
``Omega = Tr(H) / n * ||Q_b(W) - W||^2``, the second-order loss increase when the Hessian
is replaced by its average eigenvalue; HAWQ-V3 (Yao et al., ICML 2021, section 3.3) picks
each layer's precision with an integer linear program that minimises the summed
``Omega`` under a size/BitOps/latency budget. Here an option is (prune level, weight bits,
activation bits) per decision unit, not bits alone:

- weight term: ``h_u * ||Q_w(W) - W||^2`` over the rows the option keeps, where ``h_u`` is
  the unit's Hessian trace per weight (the probes' Hutchinson estimate, negative
  estimates clamped to 0) and ``Q_w`` the per-channel symmetric quantizer of
  ``compressors.quant``;
- pruning term: the same curvature times the squared norm of the weights the removed
  channels take away (the unit's output rows and its consumers' input columns, each
  with its own layer's unit's ``h``), channels removed in ``removal_order``: the
  perturbation ``delta = -W`` in HAWQ's quadratic model (our extension; the paper only
  quantizes). Channel removal is a large perturbation and the quadratic model misjudges
  it badly for some units (on a tiny ResNet it ranks the residual stream least
  sensitive to pruning while its measured 50% drop is the largest), so by default each
  unit's pruning term keeps this per-channel shape but is scaled to equal
  ``kappa * |drop_prune50|`` at the probe's 50% (``calibrate_pruning=False`` keeps the
  pure Hessian term);
- activation term (HAWQ-V3 sets activation bits together with weight bits but ranks by
  the weight term; we need a separate signal): the unit's measured 2-bit activation
  probe ``|drop_a2|`` scaled by ``4^-(a-2)`` (uniform quantization noise power falls 4x
  per bit), times ``kappa``.

A unit whose Hessian trace is estimated at or below 0 (sampling noise on a small trace) would
have free weight and pruning terms; it is given the curvature at which its 2-bit weight term
matches its measured 2-bit probe at the model's exchange rate (``_curvatures``). When no unit
has curvature (torchvision's random-init Inception-v3: all 95 units), the curvature is 1
everywhere, so both terms are plain perturbation norms (the pruning term still scaled to each
unit's probe).

``kappa`` converts measured accuracy drops into the Hessian terms' loss units, once per
model: the summed Hessian prediction of the 2-bit-weight and 50%-pruning probes over
the summed measured drops. Probe drops are floored at half the search split's accuracy
resolution, so a drop too small to measure does not divide by zero.

Costs are coupled: a layer's cost depends on its own unit's option and on its input
units' kept channels. Each option is priced by its marginal cost with every other unit
at a reference (the unpruned W8A8 model in round 1, the previous round's solution
after that); the ILP's budget then moves by the previous solution's true overshoot
(tighter) or undershoot (looser) and the problem is re-solved, a few rounds; the
lowest-sensitivity solution that truly fits wins. Options that another option of the
same unit beats on both sensitivity and cost are dropped before each solve (exact). Budget the
chosen round leaves unused is spent greedily on the same scores (``fill_budget``, used by every
solver-based planner). The plan is then fed through a
``CompressionEnv`` episode like every planner's, whose projection guarantees the budget
even if no round fit. Choosing the plan needs no proxy evaluation; scoring it through the
env is the one evaluation ``evaluations_used`` counts.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from metacompress.agents.planner import PlanResult, ScoreBook, check_evaluations
from metacompress.agents.search_baselines import PRUNE_STEP, executed_bit_levels, prune_grid
from metacompress.compressors.cost import total_cost
from metacompress.compressors.plan import kept_channels_for
from metacompress.compressors.quant import quantize_weight
from metacompress.compressors.spec import ModelSpec
from metacompress.envs.context import TaskContext
from metacompress.compressors.budget import FEASIBILITY_TOLERANCE, PlanVectors, UnitChoice

ILP_ROUNDS = 6
BISECTION_STEPS = 8  # ILP solves that look for a fitting budget when no round fits (``_largest_fitting``)
ILP_SECONDS = 30.0  # per solve; HiGHS returns its best feasible point if it hits the limit
TIE_BREAK = 1e-6  # relative weight of "compress less" among options of equal sensitivity


@dataclass(frozen=True)
class UnitOptions:
    """The distinct executed options of one decision unit and their sensitivities.

    Args:
        unit: the unit's index in the model spec.
        choices: one raw choice per option (what the env is fed).
        executed: (kept, w bits, a bits) the env executes for each choice.
        sensitivity: HAWQ-style loss increase of each option (see the module docstring).
        terms: (options, 3) the weight-quantization, pruning and activation terms that sum
            to ``sensitivity`` (the few-shot planner re-weights them per task).
    """

    unit: int
    choices: tuple[UnitChoice, ...]
    executed: tuple[tuple[int, int, int], ...]
    sensitivity: np.ndarray
    terms: np.ndarray


@dataclass(frozen=True)
class HawqSolution:
    """The ILP's choice per decision unit, its objective, its true cost ratio and the rounds run.

    ``trace`` holds every round's (true cost ratio, objective, fits).
    """

    choices: tuple[UnitChoice, ...]
    objective: float
    cost_ratio: float
    fits: bool
    trace: tuple[tuple[float, float, bool], ...]


def _per_channel(values: torch.Tensor, indices: torch.Tensor) -> np.ndarray:
    """Sum per-row (or per-column) values into the unit's channels: indices (C, k)."""
    return values[indices].sum(dim=1).double().numpy()


@dataclass
class _UnitTerms:
    """Per-channel HAWQ terms of one unit, before the options are priced."""

    quant: dict[int, np.ndarray]  # bits -> h * squared quantization error per channel
    removal: np.ndarray  # h * squared norm each channel's removal takes away
    order: np.ndarray  # channels, least important first


def _unit_terms(context: TaskContext, unit_index: int, h: list[float], bit_levels: list[int]) -> _UnitTerms:
    """Curvature-weighted quantization error and removal norm of each channel of a unit."""
    evaluator = context.evaluator
    unit = context.spec.units[unit_index]
    graph = evaluator.graph.units[unit_index]
    unit_of = {layer.name: layer.unit for layer in context.spec.layers}
    quant = {b: np.zeros(unit.channels) for b in bit_levels}
    removal = np.zeros(unit.channels)
    with torch.no_grad():
        for target in graph.targets:
            if target.module not in unit_of:  # BatchNorm and other non-quantized owners
                continue
            w = evaluator.model.get_submodule(target.module).weight.detach()
            curvature = h[unit_of[target.module]]
            if target.role == "in":  # the consumers' input columns: (C_in, ...) after the transpose
                if not unit.prunable:  # its consumers' mapping may not be channel-wise (PixelShuffle)
                    continue
                removal += curvature * _per_channel((w**2).transpose(0, 1).reshape(w.shape[1], -1).sum(dim=1), target.indices)
                continue
            rows = w.reshape(w.shape[0], -1)
            removal += curvature * _per_channel((rows**2).sum(dim=1), target.indices)
            for b in bit_levels:
                error = ((quantize_weight(w, b) - w) ** 2).reshape(w.shape[0], -1).sum(dim=1)
                quant[b] += curvature * _per_channel(error, target.indices)
    return _UnitTerms(quant, removal, graph.removal_order.numpy())


def _curvatures(context: TaskContext, floor: float) -> list[float]:
    """Each unit's Hessian trace per weight, with a stand-in where the estimate is at or below 0.

    A Hutchinson estimate of a small trace can come out negative (sampling noise): a few units
    of the zoo's MobileNetV2 and generated networks, every unit of a random-init Inception-v3.
    A unit left at 0 would make low weight bits free for the ILP whatever its measured damage.
    So such a unit gets the curvature that makes its 2-bit weight term match its measured
    2-bit probe at the model's own exchange rate (summed 2-bit terms over summed 2-bit drops
    of the units that have curvature); with no curvature anywhere, 1 everywhere, and ``kappa``
    alone relates the plain perturbation norms to the probes.
    """
    probes = context.probes.units
    h = [max(p.hessian_trace, 0.0) / p.weight_count if p.weight_count else 0.0 for p in probes]
    blind = [i for i, p in enumerate(probes) if p.weight_count and h[i] == 0.0]
    if not blind:
        return h
    if not any(h):
        return [1.0 if p.weight_count else 0.0 for p in probes]
    sighted = [u.index for u in context.decision_units if h[u.index] > 0.0]  # fixed units (heads) have no 2-bit probe
    if not sighted:
        return h
    ones = [1.0] * len(probes)
    error = {i: float(_unit_terms(context, i, ones, [2]).quant[2].sum()) for i in (*sighted, *blind)}
    rate = sum(h[i] * error[i] for i in sighted) / sum(max(-probes[i].drop_w2, floor) for i in sighted)
    for i in blind:
        h[i] = rate * max(-probes[i].drop_w2, floor) / error[i] if error[i] > 0 else 0.0
    return h


def unit_options(context: TaskContext, prune_step: float = PRUNE_STEP, calibrate_pruning: bool = True) -> list[UnitOptions]:
    """Every decision unit's distinct options with their HAWQ-style sensitivities.

    Args:
        context: the task.
        prune_step: spacing of the prune levels offered to prunable units.
        calibrate_pruning: rescale each unit's pruning term so that at the probe's 50%
            it equals ``kappa * |drop_prune50|`` (see the module docstring); False keeps
            the pure Hessian term.
    """
    probes = context.probes.units
    floor = 0.5 / max(len(context.evaluator.data.search.y), 1)
    h = _curvatures(context, floor)
    bit_levels = executed_bit_levels(context)
    predicted, measured, tables = 0.0, 0.0, []
    codec = context.codec
    for position, unit in enumerate(context.decision_units):
        terms = _unit_terms(context, unit.index, h, bit_levels)
        probe = probes[unit.index]
        probe_kept = kept_channels_for(unit, 0.5) if unit.prunable and unit.channels // unit.channel_step >= 2 else unit.channels
        at_probe = float(terms.removal[terms.order[: unit.channels - probe_kept]].sum())
        predicted += float(terms.quant[min(bit_levels)].sum()) + at_probe
        measured += max(-probe.drop_w2, floor) + (max(-probe.drop_prune50, floor) if probe_kept < unit.channels else 0.0)
        seen: dict[tuple[int, int, int], UnitChoice] = {}
        rows = []
        for ratio in prune_grid(context.max_prune, prune_step) if unit.prunable else [0.0]:
            for w_bits in bit_levels:
                for a_bits in bit_levels:
                    choice = codec.choice(codec.action(UnitChoice(ratio, w_bits, a_bits), position), position)
                    executed = context.projector.execute(unit, choice)
                    if executed in seen:
                        continue
                    seen[executed] = choice
                    kept, we, ae = executed
                    kept_mask = np.ones(unit.channels, dtype=bool)
                    kept_mask[terms.order[: unit.channels - kept]] = False
                    removed = float(terms.removal[~kept_mask].sum())
                    rows.append((float(terms.quant[we][kept_mask].sum()), removed, max(-probe.drop_a2, floor) * 4.0 ** -(ae - 2)))
        prune_drop = max(-probe.drop_prune50, floor)
        tables.append((unit.index, tuple(seen.values()), tuple(seen), np.asarray(rows), at_probe, prune_drop))
    # kappa: predicted loss per unit of measured accuracy drop (2-bit and 50% probes); no curvature: probes alone rank
    kappa = predicted / measured if predicted > 0 else 1.0
    result = []
    for index, choices, executed, rows, at_probe, prune_drop in tables:
        prune_scale = kappa * prune_drop / at_probe if calibrate_pruning and at_probe > 0 else 1.0
        terms = rows * np.asarray([1.0, prune_scale, kappa])
        result.append(UnitOptions(index, choices, executed, terms.sum(axis=1), terms))
    return result


def _tie_break(context: TaskContext, options: list[UnitOptions]) -> list[np.ndarray]:
    """A tiny penalty on compression so equal-sensitivity options resolve to the gentler one."""
    scale = TIE_BREAK * max(max(float(o.sensitivity.max()) for o in options), 1e-30)
    penalties = []
    for o in options:
        unit = context.spec.units[o.unit]
        penalties.append(
            np.asarray([(1 - k / unit.channels) + (8 - w) / 6 + (8 - a) / 6 for k, w, a in o.executed]) * scale
        )
    return penalties


def affected_spec(spec: ModelSpec, unit: int) -> ModelSpec:
    """The model restricted to the layers whose cost a unit's option changes (its own and its consumers)."""
    layers = tuple(l for l in spec.layers if l.unit == unit or any(u == unit for u, _ in l.in_units))
    return replace(spec, layers=layers, fixed_fp32_params=0, fingerprint="")


def _marginal_costs(context: TaskContext, options: list[UnitOptions], partial: list[ModelSpec], reference) -> list[np.ndarray]:
    """Each option's cost change from the reference, every other unit held at the reference."""
    kind, hw = context.budget.kind, context.hardware
    costs = []
    for o, sub in zip(options, partial):
        kept, w, a = (list(v) for v in reference)
        base = total_cost(sub, kind, kept, w, a, hw)
        row = []
        for k, wb, ab in o.executed:
            kept[o.unit], w[o.unit], a[o.unit] = k, wb, ab
            row.append(total_cost(sub, kind, kept, w, a, hw) - base)
        costs.append(np.asarray(row) / context.reference_cost)
    return costs


def _undominated(objective: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the options no other option beats on both objective and cost.

    A dominated option is never needed in an optimal solution of this multiple-choice
    knapsack, so dropping it shrinks the ILP (343 options per unit to a few dozen) exactly.
    """
    order = np.lexsort((objective, cost))
    keep, best = [], np.inf
    for i in order:
        if objective[i] < best:
            keep.append(i)
            best = objective[i]
    return np.asarray(keep)


@contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null while HiGHS runs.

    HiGHS's C++ MIP code prints a leftover debug line
    (``HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();``, HiGHS.jl
    issue 318) straight to the process's stdout on some problems, past scipy's ``disp=False``;
    a 40-minute training log carried 34 of them. Python's own buffered output is flushed
    first, so nothing of ours is lost or reordered; if the process has no descriptor 1,
    nothing is redirected.
    """
    fd = 1  # the process's stdout, where native code writes whatever ``sys.stdout`` is now
    try:
        sys.stdout.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _solve_ilp(objective: list[np.ndarray], costs: list[np.ndarray], limit: float) -> list[int] | None:
    """One-hot option per unit minimising the objective with summed cost <= limit (HiGHS).

    The objective is rescaled to a largest coefficient of 1 first: HiGHS's optimality
    tolerances are absolute (about 1e-7), and Hessian-scale sensitivities can be far
    smaller (a random-init MobileNetV3 gives 1e-10 per option), which made every feasible
    point look optimal and returned the most compressed plan with most of the budget unspent.
    """
    kept = [_undominated(o, c) for o, c in zip(objective, costs)]
    scale = max(max(float(np.abs(o[k]).max()) for o, k in zip(objective, kept)), 1e-300)
    sizes = [len(k) for k in kept]
    n = sum(sizes)
    starts = np.cumsum([0] + sizes[:-1])
    one_hot = np.zeros((len(sizes), n))
    for row, (start, size) in enumerate(zip(starts, sizes)):
        one_hot[row, start : start + size] = 1.0
    constraints = [
        LinearConstraint(one_hot, 1.0, 1.0),
        LinearConstraint(np.concatenate([c[k] for c, k in zip(costs, kept)])[None, :], -np.inf, limit),
    ]
    with _native_stdout_silenced():
        res = milp(
            np.concatenate([o[k] for o, k in zip(objective, kept)]) / scale,
            constraints=constraints,
            integrality=np.ones(n),
            bounds=Bounds(0, 1),
            options={"time_limit": ILP_SECONDS},
        )
    if res.x is None:
        return None
    return [int(k[np.argmax(res.x[start : start + size])]) for k, start, size in zip(kept, starts, sizes)]


def solve_hawq(context: TaskContext, options: list[UnitOptions], rounds: int = ILP_ROUNDS) -> HawqSolution:
    """The ILP over the units' options under the budget, re-linearised and re-budgeted for a few rounds.

    Round 1 prices options around the unpruned W8A8 model; each later round prices them
    around the previous solution (exact there) and moves the ILP's budget by the previous
    solution's true overshoot (tighter) or undershoot (looser). The feasible solution
    with the lowest summed sensitivity wins. If none fits (tight budgets, where pruning one
    unit also shrinks its neighbours' inputs and the linear prices miss it by 1.3-7x), the
    ILP's budget is bisected around the last solution (``_largest_fitting``); only if that
    fails too is the last solution returned, for the env's projection to make it fit.
    """
    spec = context.spec
    partial = [affected_spec(spec, o.unit) for o in options]
    objective = [o.sensitivity + t for o, t in zip(options, _tie_break(context, options))]
    eights = [8] * len(spec.units)
    reference = (list(spec.full_kept), eights, eights)
    limit = context.budget.fraction
    best: HawqSolution | None = None
    trace: list[tuple[float, float, bool]] = []

    def solve(costs: list[np.ndarray], allowance: float) -> HawqSolution | None:
        picks = _solve_ilp(objective, costs, allowance)
        if picks is None:
            return None
        choices = tuple(o.choices[i] for o, i in zip(options, picks))
        ratio = context.cost_ratio(*context.projector.executed_vectors(choices))
        fits = ratio <= context.budget.fraction * (1 + FEASIBILITY_TOLERANCE)
        value = float(sum(o.sensitivity[i] for o, i in zip(options, picks)))
        trace.append((ratio, value, fits))
        return HawqSolution(choices, value, ratio, fits, ())

    last: HawqSolution | None = None
    for _ in range(rounds):
        base = total_cost(spec, context.budget.kind, *reference, context.hardware) / context.reference_cost
        solution = solve(_marginal_costs(context, options, partial, reference), limit - base)
        if solution is None:
            break
        last = solution
        if last.fits and (best is None or last.objective < best.objective):
            best = last
        limit -= last.cost_ratio - context.budget.fraction
        reference = context.projector.executed_vectors(last.choices)
    if best is None and last is not None:
        costs = _marginal_costs(context, options, partial, reference)
        base = total_cost(spec, context.budget.kind, *reference, context.hardware) / context.reference_cost
        best = _largest_fitting(solve, costs, context.budget.fraction - base) or last
    if best is not None:
        return replace(best, trace=tuple(trace))
    most = tuple(context.projector.most_compressed(u) for u in context.decision_units)
    return HawqSolution(most, float("nan"), context.cost_ratio(*context.projector.executed_vectors(most)), True, ())


def _largest_fitting(solve: Callable[[list[np.ndarray], float], HawqSolution | None], costs: list[np.ndarray], high: float,
                     steps: int = BISECTION_STEPS) -> HawqSolution | None:
    """The ILP under the largest budget (on fixed linear prices ``costs``) whose plan really fits, by bisection.

    ``high`` is the allowance the prices give the whole budget; its plan overshoots. At the
    lowest allowance every unit takes its cheapest option (the most compressed plan, which
    fits on any feasible task); between the two, a plan's true cost grows with the allowance.
    """
    low = float(sum(c.min() for c in costs))
    best = None
    for _ in range(steps):
        middle = (low + high) / 2
        solution = solve(costs, middle)
        if solution is not None and solution.fits:
            best, low = (solution if best is None or solution.objective < best.objective else best), middle
        else:  # over budget (or HiGHS found nothing within its time): a smaller allowance
            high = middle
    return best


def fill_budget(context: TaskContext, vectors: PlanVectors, options: list[UnitOptions]) -> PlanVectors:
    """Spend unused budget on the solver's grid of options, then on the channel counts between its levels.

    The prune grid's next level can cost more than what is left when one unit holds most of the
    cost (PESTO's stem conv: 25 to 30 of 40 channels is 34% of a latency budget with 19% left),
    so a second pass offers every channel count between a unit's grid levels (``_between_levels``).
    Chosen on the validation split (experiment 26): hawq +0.75 points (t = 2.17; better on 15 of
    48 tasks, worse on 1), budget used 97.9% -> 99.2%. Both passes may trade one coordinate of
    a unit for another (``_fill``; experiment 27): hawq +0.14 (better on 2 of 48, worse on 0),
    zero-shot -0.01.
    """
    partial = {o.unit: affected_spec(context.spec, o.unit) for o in options}  # both passes price moves on these
    return _fill(context, _fill(context, vectors, options, partial), _between_levels(context, options), partial)


def _between_levels(context: TaskContext, options: list[UnitOptions]) -> list[UnitOptions]:
    """Each unit's options plus the kept counts between its grid levels (same bits), terms interpolated linearly.

    A unit's terms are sums over its channels in removal order, so between two grid levels
    they move piecewise linearly; the straight line between the levels is the fill's estimate.
    """
    extended = []
    for option in options:
        unit = context.spec.units[option.unit]
        choices, executed, terms = list(option.choices), list(option.executed), list(option.terms)
        levels: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for (kept, w, a), row in zip(option.executed, option.terms):
            levels.setdefault((w, a), []).append((kept, row))
        for (w, a), grid in levels.items():
            grid.sort(key=lambda level: level[0])
            for (low, low_terms), (high, high_terms) in zip(grid, grid[1:]):
                for kept in range(low + unit.channel_step, high, unit.channel_step):
                    choices.append(UnitChoice(1.0 - kept / unit.channels, w, a))
                    executed.append((kept, w, a))
                    terms.append(low_terms + (kept - low) / (high - low) * (high_terms - low_terms))
        table = np.asarray(terms)
        extended.append(replace(option, choices=tuple(choices), executed=tuple(executed), sensitivity=table.sum(axis=1), terms=table))
    return extended


def _fill(context: TaskContext, vectors: PlanVectors, options: list[UnitOptions], partial: dict[int, ModelSpec]) -> PlanVectors:
    """Spend unused budget: repeatedly take the option with the best score gain per added cost.

    Candidates are a decision unit's options with a lower objective than the one it executes:
    the HAWQ sensitivity plus the ILP's tie-break (``_tie_break``), so an option the scores
    cannot tell from the current one still wins by compressing less. Without the tie-break,
    units whose scores are flat (a Hessian trace estimated at or below 0, common at random
    init) kept their pruned channels and low bits beside unspent budget: torchvision's
    Inception-v3 used 73% of a BitOps budget.

    A candidate may trade one coordinate for another (more bits, fewer channels): when the
    next gentler option costs more than is left, the same unit's cheaper mix can still lower
    the objective. A unit executing an option off the solver's grid (a policy's kept count)
    is offered only gentler options, which keep what the plan chose there.

    A move that adds no cost goes first; otherwise the largest objective drop per unit of
    added cost that still fits, until none fits. Every move lowers the summed objective, so
    the loop ends. An option's added cost is priced on the layers it changes only
    (``hawq.affected_spec``), and the chosen move is checked on the whole plan.
    """
    projector = context.projector
    kind, hardware, limit = projector.kind, projector.hardware, projector.limit * (1 + FEASIBILITY_TOLERANCE)
    objectives = [o.sensitivity + t for o, t in zip(options, _tie_break(context, options))]
    kept, w_bits, a_bits = (list(v) for v in vectors)
    refused: set[tuple[int, tuple[int, int, int]]] = set()
    tie = 1e-12 * max(max(float(o.max()) for o in objectives), 1e-300)  # relative: scores can be ~1e-10
    while True:
        base_cost = projector.cost(kept, w_bits, a_bits)
        best, best_gain = None, (False, 0.0)
        for option, objective in zip(options, objectives):
            u, sub = option.unit, partial[option.unit]
            now = (kept[u], w_bits[u], a_bits[u])
            current = _objective_of(option, objective, now)
            before = total_cost(sub, kind, kept, w_bits, a_bits, hardware)
            for executed, score in zip(option.executed, objective):
                k, w, a = executed
                if executed == now or (u, executed) in refused:
                    continue
                if current is None:  # off the grid: only gentler moves, which cannot undo what the plan chose
                    if k < now[0] or w < now[1] or a < now[2]:
                        continue
                elif score >= current:
                    continue
                kept[u], w_bits[u], a_bits[u] = executed
                added = total_cost(sub, kind, kept, w_bits, a_bits, hardware) - before
                kept[u], w_bits[u], a_bits[u] = now
                if base_cost + added > limit:
                    continue
                drop = (current if current is not None else score) - score + tie
                # a trade that lowers the objective without adding cost beats any purchase
                gain = (True, drop) if added <= 0 else (False, drop / max(added, 1e-12 * projector.reference_cost))
                if gain > best_gain:
                    best, best_gain = (u, executed), gain
        if best is None:
            return PlanVectors(kept, w_bits, a_bits)
        u, executed = best
        now = (kept[u], w_bits[u], a_bits[u])
        kept[u], w_bits[u], a_bits[u] = executed
        if not projector.fits(kept, w_bits, a_bits):  # float sums disagreed at the budget's edge
            kept[u], w_bits[u], a_bits[u] = now
            refused.add(best)


def plan_sensitivity(context: TaskContext, options: list[UnitOptions], vectors: PlanVectors) -> float:
    """The solver's summed sensitivity of a plan, channel counts between grid levels interpolated as the fill prices them."""
    total = 0.0
    for option in _between_levels(context, options):
        executed = (vectors.kept[option.unit], vectors.w_bits[option.unit], vectors.a_bits[option.unit])
        total += float(option.sensitivity[option.executed.index(executed)])
    return total


def _objective_of(option: UnitOptions, objective: np.ndarray, executed: tuple[int, int, int]) -> float | None:
    """The solver's objective of the option a unit executes now (None if it is off the solver's grid)."""
    try:
        return float(objective[option.executed.index(executed)])
    except ValueError:
        return None


def actions_for(context: TaskContext, vectors: PlanVectors) -> np.ndarray:
    """Raw actions (decisions, 3) that execute exactly ``vectors`` on ``context`` (each kept count as its prune ratio)."""
    choices = [
        UnitChoice(1.0 - vectors.kept[u.index] / u.channels, vectors.w_bits[u.index], vectors.a_bits[u.index])
        for u in context.decision_units
    ]
    return np.stack([context.codec.action(c, t) for t, c in enumerate(choices)])


@dataclass(frozen=True)
class HawqPlanner:
    """HAWQ-V3-style planner: sensitivity-weighted integer program, then one env episode.

    Args:
        prune_step: spacing of the prune levels offered to each prunable unit.
        rounds: ILP re-linearisation/tightening rounds (see the module docstring).
        calibrate_pruning: scale the pruning term to the measured 50% probe (default) or
            keep the pure Hessian term (``False``).
        fill: spend budget the ILP's plan leaves unused (``fill_budget``; default). The
            re-linearised costs can oscillate between rounds on strongly coupled models (a
            4-unit CNN with PixelUnshuffle: 0.33, 0.19, 0.38, 0.19, ... of a 0.30 budget) and
            the best fitting round can leave a third of it unspent; ``False`` is the ILP's
            plan as published.
        name: label in reports.
    """

    prune_step: float = PRUNE_STEP
    rounds: int = ILP_ROUNDS
    calibrate_pruning: bool = True
    fill: bool = True
    name: str = "hawq"

    def solve(self, context: TaskContext) -> HawqSolution:
        """The ILP's choices for ``context`` (no proxy evaluation)."""
        return solve_hawq(context, self.options(context), self.rounds)

    def options(self, context: TaskContext) -> list[UnitOptions]:
        """Every decision unit's options and their sensitivities (``unit_options`` with this planner's settings)."""
        return unit_options(context, self.prune_step, self.calibrate_pruning)

    def plan(self, context: TaskContext, evaluations: int = 1, seed: int = 0) -> PlanResult:
        """Solve the ILP and score its plan through one env episode (``evaluations`` >= 1; uses 1).

        ``seed`` is unused: sensitivities and HiGHS are deterministic.
        """
        check_evaluations(self.name, evaluations)
        return plan_solved(context, self.options(context), self.rounds, self.fill)


def plan_solved(context: TaskContext, options: list[UnitOptions], rounds: int = ILP_ROUNDS, fill: bool = True) -> PlanResult:
    """Solve the ILP on ``options``' sensitivities, spend what it leaves (``fill``), score through one episode.

    Every solver-based one-shot planner ends here (``HawqPlanner`` on the Hessian terms,
    ``PredictedScorePlanner`` on predicted tables), so they differ only in their scores.
    """
    book = ScoreBook(context, 1, 1)
    solution = solve_hawq(context, options, rounds)
    actions = np.stack([context.codec.action(c, t) for t, c in enumerate(solution.choices)])
    vectors = context.projector.executed_vectors(solution.choices)
    if fill:
        filled = fill_budget(context, vectors, options)
        if filled != vectors:
            actions, vectors = actions_for(context, filled), filled
    book.run(actions)
    return book.result(
        ilp_objective=solution.objective,
        plan_sensitivity=plan_sensitivity(context, options, vectors),
        ilp_cost_ratio=solution.cost_ratio,
        ilp_fits=solution.fits,
        ilp_trace=[list(t) for t in solution.trace],
    )

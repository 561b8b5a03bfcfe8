"""``compress``: the one-call Python API behind ``metacompress apply``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from metacompress.agents.planner import Planner, PlanResult
from metacompress.agents.registry import evaluate_planner, load_planner
from metacompress.compressors.budget import reference_cost
from metacompress.compressors.cost import size_bits
from metacompress.compressors.hardware import Hardware
from metacompress.compressors.graph import check_model, forward_example
from metacompress.compressors.surgery import plain_copy
from metacompress.compressors.plan import Plan
from metacompress.compressors.budget import DEFAULT_MAX_PRUNE, BudgetProjector, check_max_prune
from metacompress.compressors.metrics import (R2, LossFn, Metric, MetricFn, check_output_kind, default_metric, detect_output_kind, logits,
                                              resolve_metric)
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import CALIBRATION_SAMPLES, PROXY_SAMPLES, ModelEvaluator
from metacompress.envs.executor import Executor
from metacompress.envs.probes import compute_probes
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import resolve_hardware
from metacompress.envs.world import DEFAULT_SEARCH_FINETUNE_STEPS
from metacompress.accuracy_target import MaxDrop, walk_budgets
from metacompress.data import MIN_SPLIT_SAMPLES, as_splits, check_data, move_splits, splits_from_arrays  # noqa: F401  (splits_from_arrays: public here)
from metacompress.devices import resolve_device
from metacompress.errors import EvaluationBudgetError, MetacompressError
from metacompress.report import decision_table

log = logging.getLogger(__name__)

DEFAULT_FINETUNE_STEPS = 300
PROGRESS_EVERY_S = 30.0  # a long stage logs how far it is at most this often


@dataclass(frozen=True)
class CompressionResult:
    """What ``compress`` returns.

    Args:
        plan: the per-unit decisions (within budget).
        model: the exported compressed model, recovered by a KD fine-tune.
        decisions: one row per unit (columns in ``metacompress.report``).
        summary: the metric (proxy and test), cost vs budget, sizes, timings; with ``max_drop``,
            the target and the trade-off curve walked (``tradeoff``).
        planning: the planner's own result (evaluations used, history).
    """

    plan: Plan
    model: nn.Module
    decisions: pd.DataFrame
    summary: dict
    planning: PlanResult = field(repr=False)

    def save(self, out: str | Path, config: dict | None = None, builder: dict | None = None, overwrite: bool = False) -> Path:
        """Write the run folder ``metacompress apply`` writes (atomically; see ``metacompress.compressors.runs``).

        ``summary.json``, ``plan.json``, ``decisions.csv``/``.json``, ``report.md``, the
        saved model in ``model/`` and, given ``config``, ``config.json`` with the versions.

        Args:
            out: the run folder.
            config: the resolved configuration that produced this result (for the record).
            builder: how to rebuild the unpruned architecture (``{"zoo": id}``), for ``load_compressed`` callers.
            overwrite: replace an existing apply run there (never anything else).

        Raises:
            RunExists / UnwritableOutput: see ``RunFolder.check``.
        """
        import json

        from metacompress.compressors.export import save_compressed
        from metacompress.report import markdown_report
        from metacompress.compressors.runs import RunFolder

        with RunFolder(out, "apply", overwrite).write(config) as tmp:
            (tmp / "summary.json").write_text(json.dumps(self.summary, indent=2))
            self.plan.to_json(tmp / "plan.json")
            self.decisions.to_csv(tmp / "decisions.csv", index=False)
            (tmp / "decisions.json").write_text(self.decisions.to_json(orient="records", indent=2))
            (tmp / "report.md").write_text(markdown_report(self.summary, self.decisions))
            if self.summary.get("tradeoff"):
                from metacompress.plotting import plot_tradeoff

                pd.DataFrame(self.summary["tradeoff"]).to_csv(tmp / "tradeoff.csv", index=False)
                plot_tradeoff(self.summary["tradeoff"], tmp / "tradeoff.png", self.summary["target_floor"], self.summary["metric"])
            save_compressed(self.model, tmp / "model", builder=builder)
        return Path(out)


def _default_evaluations(planner: Planner) -> int:
    """The evaluations a planner gets when ``few_shot`` is 0: the default of its ``plan(..., evaluations=N)``.

    Checked before the probes run (minutes on a large model), so a planner that needs
    evaluations and declares no default fails at once, naming the argument to pass.

    Raises:
        EvaluationBudgetError: the planner's ``plan`` has no default ``evaluations``.
    """
    import inspect

    default = inspect.signature(planner.plan).parameters.get("evaluations")
    if default is None or not isinstance(default.default, int):
        raise EvaluationBudgetError(
            f"planner {getattr(planner, 'name', type(planner).__name__)!r} needs proxy evaluations and declares no default; "
            "pass few_shot=N (its evaluation budget, e.g. few_shot=300), or --method NAME-N on the command line"
        )
    return default.default


def compress(
    model: nn.Module,
    example_input: torch.Tensor,
    data,
    hardware: str | Hardware = "m7-mcu",
    budget: str | Budget = "latency=0.5",
    policy: str | Path | None = None,
    few_shot: int = 0,
    finetune_steps: int = DEFAULT_FINETUNE_STEPS,
    seed: int = 0,
    frozen: tuple[str, ...] = (),
    max_prune: float = DEFAULT_MAX_PRUNE,
    name: str = "model",
    planner: Planner | None = None,
    metric: Metric | MetricFn | None = None,
    output_kind: str | None = None,
    loss: LossFn | None = None,
    max_drop: str | float | MaxDrop | None = None,
    device: str | torch.device = "cpu",
    executor: Executor | None = None,
    proxy_samples: int = PROXY_SAMPLES,
    calibration_samples: int = CALIBRATION_SAMPLES,
) -> CompressionResult:
    """Compress ``model`` for ``hardware`` under ``budget`` with a learned policy.

    The user's model is never modified. Every input is checked before the first
    expensive step.

    Args:
        model: a trained model (Conv1d/Conv2d/Conv3d/Linear layers are compressed).
        example_input: a batch it accepts, e.g. (N, C, H, W).
        data: ``.train``/``.search``/``.test`` splits (attributes or dict keys), each with
            ``.x`` and ``.y`` tensors, a ``DataLoader`` or a ``Dataset`` of (input, target)
            pairs (train: calibration and fine-tuning; search: the proxy the planner
            optimises; test: the report). See ``metacompress.data``.
        hardware: preset name, ``sample:<archetype>:<seed>``, LUT CSV path or a ``Hardware``.
        budget: ``kind=fraction`` of the unpruned W8A8 cost, e.g. ``"latency=0.3"``; with
            ``max_drop`` only its kind counts (``"latency"`` alone is accepted).
        policy: a policy folder, or a shipped one by name: ``default`` (PPO, the default),
            ``rl2``, or a head meta-learner where shipped (``reptile``, ``maml``, ``meta-sgd``, ``meta-curvature``).
        few_shot: proxy evaluations to adapt with (0 = zero-shot, one rollout; with a residual policy,
            N > 0 re-solves under score corrections fitted to them: ``CorrectedSolverPlanner``).
        finetune_steps: KD steps of the final recovery (batch 128, teacher = ``model``).
        seed: makes the whole call reproducible.
        frozen: module paths to keep unpruned at 8 bits (the head always is).
        max_prune: the largest prune ratio any unit may take.
        name: how the report names the model.
        planner: plan with this instead of a policy (e.g. ``HawqPlanner()`` or
            ``EvolutionPlanner()``; ``few_shot`` is then its evaluation budget, and 0 means
            the default of its ``plan``), so a baseline gets exactly the same evaluator,
            projection and report.
        metric: ``fn(outputs, targets) -> float``, higher is better, over a whole split (or a
            ``Metric``); replaces top-1 accuracy in the planner's proxy, the probes and the
            report. Targets may then be any tensor. Unset: top-1 accuracy for class ids,
            R2 (``metrics.R2``) for real-valued targets shaped like the outputs.
        output_kind: ``"logits"``, ``"probabilities"`` or ``"regression"``: picks the
            recovery's distillation loss (KL or MSE); default: ``"regression"`` when R2 is
            the default metric, else detected where unambiguous (softmax rows, one value
            per sample), else logits.
        loss: a distillation ``loss(student_out, teacher_out) -> scalar tensor`` instead.
        max_drop: accuracy-target mode: the cheapest plan of the budget's kind whose
            recovered search-split metric falls at most this far: points (``1.0``: one
            hundredth of the metric, a percentage point of accuracy) or ``"1%"`` (relative).
            See ``metacompress.accuracy_target``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``: where probes, evaluations and recovery
            run (the returned model is on the CPU).
        executor: where batches of the planner's evaluations run (``envs.executor``; default
            in-process). Same seed, same plan on every executor.
        proxy_samples: search-split samples every proxy evaluation scores (a fixed seeded
            subset). Evaluation time grows with it; fewer resolve plans more coarsely (the
            default resolves 0.1 point of accuracy).
        calibration_samples: train-split samples every evaluation calibrates BatchNorm and
            activation ranges on (and the final model too). On a large model these two set
            the time of the probes and of each planner evaluation.

    Raises:
        MetacompressError: bad input (its message names the problem and the fix),
            ``InfeasibleBudget`` with the minimum achievable cost, ``PolicyError``.
    """
    start = time.perf_counter()
    target_drop = MaxDrop.parse(max_drop) if max_drop is not None else None
    if target_drop is not None and isinstance(budget, str) and "=" not in budget:
        budget = Budget(budget.strip(), 1.0)  # only the kind counts: the walk picks the fraction
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    check_max_prune(max_prune)
    target = resolve_hardware(hardware)
    device = resolve_device(device)
    score = resolve_metric(metric)
    if output_kind is not None:
        check_output_kind(output_kind)
    if loss is not None and not callable(loss):
        raise MetacompressError(f"loss must be a callable loss(student_out, teacher_out) -> tensor, got {type(loss).__name__}")
    if few_shot < 0 or finetune_steps < 0:
        raise MetacompressError(f"few_shot and finetune_steps must be >= 0, got {few_shot} and {finetune_steps}")
    if proxy_samples < MIN_SPLIT_SAMPLES["search"] or calibration_samples < 1:
        raise MetacompressError(f"proxy_samples must be at least {MIN_SPLIT_SAMPLES['search']} and calibration_samples at least 1, "
                                f"got {proxy_samples} and {calibration_samples}")
    if planner is not None and policy is not None:
        raise MetacompressError("pass a policy or a planner, not both: the planner would ignore the policy")
    planner = planner or load_planner(policy, few_shot)
    few_shot = few_shot or _default_evaluations(planner)
    check_model(model)
    data = as_splits(data)
    if metric is None:
        score = default_metric(data.train.y)
        if score is R2 and output_kind is None:
            output_kind = "regression"
            log.info("real-valued targets: plans are scored by R2 and recovered as a regression (pass metric= and output_kind= to choose)")
    check_data(model, example_input, data, score)
    modes = [(module, module.training) for module in model.modules()]  # the evaluator switches it to eval mode
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            work = model if device.type == "cpu" else plain_copy(model).to(device)
            work_data = move_splits(data, device)
            kind = output_kind or _detected_kind(work, work_data.train.x[:64])
            evaluator = ModelEvaluator(
                work, work_data, frozen=tuple(frozen), calibration_samples=calibration_samples, proxy_samples=proxy_samples,
                search_finetune_steps=DEFAULT_SEARCH_FINETUNE_STEPS, metric=score, output_kind=kind, loss=loss,
            )
            if executor is not None:
                evaluator.executor = executor
            task_name = f"{name} on {target.name} ({budget})"
            projector = BudgetProjector(evaluator.spec, target, budget, max_prune)
            if target_drop is None:
                projector.check_feasible(task_name)  # structure only: before the probes
            _log_stage(start, f"analysed {name}: {_structure(evaluator.spec)}; probing each unit "
                              f"({4 * sum(not u.frozen for u in evaluator.spec.units)} proxy evaluations and the Hessian traces)")
            probes = compute_probes(evaluator, seed, _stage_progress(start, "probes"))
            _log_stage(start, f"probed; planning with {planner.name} ({few_shot} proxy evaluations), then {finetune_steps} KD steps of recovery")
            walk = None
            if target_drop is None:
                context = TaskContext(evaluator, probes, target, budget, max_prune, name=task_name)
                scored = evaluate_planner(context, planner, few_shot, seed, finetune_steps)
            else:
                walk, context, scored = _walk_to_target(evaluator, probes, target, budget, max_prune, name, planner, few_shot, seed,
                                                        finetune_steps, target_drop, projector.minimum_cost() / projector.reference_cost)
                budget = context.budget
            planning_seconds = time.perf_counter() - start - scored.finetune_seconds
        planned, compressed, test_compressed = scored.result, scored.final_model.to("cpu"), scored.final_accuracy
        plan = planned.plan
        spec = evaluator.spec
        test_original = evaluator.base_test_accuracy()
        cost_ratio = context.cost_ratio(plan.kept, plan.w_bits, plan.a_bits)
        summary = {
            "model": name,
            "hardware": target.name,
            "budget": str(budget),
            "budget_kind": budget.kind,
            "planner": planner.name,
            "evaluations_used": planned.evaluations_used,
            "seed": seed,
            "metric": score.name,
            "output_kind": kind,
            "distillation": "user loss" if loss is not None else ("MSE" if kind != "logits" else "KL, T=2" if evaluator.class_axis == -1
                                                                  else f"KL over axis {evaluator.class_axis}, T=2"),
            "device": str(device),
            "cost_ratio": cost_ratio,
            "budget_ratio": cost_ratio / budget.fraction,
            "within_budget": context.projector.fits(plan.kept, plan.w_bits, plan.a_bits),
            "size_bits": size_bits(spec, plan.kept, plan.w_bits),
            "reference_size_bits": int(reference_cost(spec, "size")),
            "fp32_size_bits": spec.total_params * 32,
            "untouched_layers": [f"{module} ({kind_name})" for module, kind_name in spec.unsupported],
            "search_accuracy_original": evaluator.base_search_accuracy,
            "search_accuracy_compressed": evaluator.proxy_accuracy(plan),
            "proxy_change": evaluator.proxy_change(plan),
            "search_finetune_steps": evaluator.search_finetune_steps,
            "test_accuracy_original": test_original,
            "test_accuracy_compressed": test_compressed,
            "test_change": test_compressed - test_original,
            "finetune_steps": finetune_steps,
            "planning_seconds": planning_seconds,
            "finetune_seconds": time.perf_counter() - start - planning_seconds,
            "total_seconds": time.perf_counter() - start,
        }
        if walk is not None:
            summary.update({"max_drop": str(target_drop), "target_met": walk.met, "target_floor": walk.floor,
                            "target_message": walk.message, "tradeoff": walk.rows()})
        decisions = decision_table(context, plan, planned.info.get("decisions"))
    finally:
        for module, training in modes:  # give the user back the modes they had
            module.training = training
    return CompressionResult(plan, compressed, decisions, summary, planned)


def _log_stage(start: float, message: str) -> None:
    """One progress line (the CLI shows them on stderr): on a large model a stage takes minutes."""
    log.info("[%6.1f s] %s", time.perf_counter() - start, message)


def _stage_progress(start: float, what: str, every_s: float = PROGRESS_EVERY_S) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that logs a line at most every ``every_s`` seconds (nothing on a quick stage)."""
    last = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.perf_counter() - last >= every_s and done < total:
            last = time.perf_counter()
            _log_stage(start, f"{what}: {done} of {total} evaluations")

    return progress


def _structure(spec) -> str:
    units = spec.units
    return (f"{len(spec.layers)} layers in {len(units)} units ({sum(u.prunable and not u.frozen for u in units)} prunable), "
            f"{spec.total_params / 1e6:.2f}M parameters")


def _detected_kind(model: nn.Module, x: torch.Tensor) -> str:
    """The output kind of ``model`` on ``x`` where unambiguous (see ``detect_output_kind``), logged."""
    with torch.no_grad():
        kind = detect_output_kind(logits(forward_example(model.eval(), x)))
    log.info("output kind: %s (detected; pass output_kind= to choose)", kind)
    return kind


def _walk_to_target(evaluator, probes, target, budget, max_prune, name, planner, few_shot, seed, finetune_steps, max_drop, lowest):
    """Accuracy-target mode: walk the budget fraction (``walk_budgets``); the chosen task's context and scored plan.

    Every candidate is planned, exported and recovered exactly as the final model is, then
    scored on the search split (the test split stays unseen until the report).
    """
    tried: dict[float, tuple[TaskContext, object]] = {}

    def attempt(fraction: float) -> tuple[float, float]:
        fraction = min(1.0, fraction * (1 + 1e-9))  # the most compressed plan's own cost, up to float rounding
        task_budget = Budget(budget.kind, fraction)
        context = TaskContext(evaluator, probes, target, task_budget, max_prune, name=f"{name} on {target.name} ({task_budget})")
        scored = evaluate_planner(context, planner, few_shot, seed, finetune_steps)
        tried[len(tried)] = (context, scored)
        plan = scored.result.plan
        return context.cost_ratio(plan.kept, plan.w_bits, plan.a_bits), evaluator.search_score(scored.final_model)

    walk = walk_budgets(attempt, lowest, evaluator.base_search_accuracy, max_drop)
    context, scored = tried[walk.chosen]
    return walk, context, scored

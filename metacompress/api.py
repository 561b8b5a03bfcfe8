"""``compress``: the one-call Python API behind ``metacompress apply``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from metacompress.agents.planner import Planner, PlanResult
from metacompress.agents.registry import evaluate_planner, load_planner
from metacompress.compressors.budget import reference_cost
from metacompress.compressors.cost import size_bits
from metacompress.compressors.hardware import Hardware
from metacompress.compressors.plan import Plan
from metacompress.compressors.recovery import logits
from metacompress.compressors.budget import DEFAULT_MAX_PRUNE, BudgetProjector, check_max_prune
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import DataLike, ModelEvaluator
from metacompress.envs.probes import compute_probes
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import resolve_hardware
from metacompress.envs.world import DEFAULT_SEARCH_FINETUNE_STEPS
from metacompress.errors import EvaluationBudgetError, InvalidData, MetacompressError
from metacompress.report import decision_table

DEFAULT_FINETUNE_STEPS = 300


@dataclass(frozen=True)
class CompressionResult:
    """What ``compress`` returns.

    Args:
        plan: the per-unit decisions (within budget).
        model: the exported compressed model, recovered by a KD fine-tune.
        decisions: one row per unit (columns in ``metacompress.report``).
        summary: accuracies (proxy and test), cost vs budget, sizes, timings.
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
            save_compressed(self.model, tmp / "model", builder=builder)
        return Path(out)


def splits_from_arrays(x, y, search_fraction: float = 0.25, test_fraction: float = 0.25, seed: int = 0):
    """Split arrays into the train / search / test splits ``compress`` needs (seeded, stratified).

    Args:
        x: inputs, (N, ...) array or tensor (converted to float32).
        y: integer labels, (N,).
        search_fraction / test_fraction: shares of the samples for the search and test splits.
    """
    from sklearn.model_selection import train_test_split

    from metacompress.envs.zoo.datasets import DatasetSplits, Split

    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    index = torch.arange(len(y)).numpy()
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=y.numpy())
    train, search = train_test_split(rest, test_size=search_fraction / (1 - test_fraction), random_state=seed, stratify=y.numpy()[rest])
    pick = lambda i: Split(x[torch.as_tensor(i)], y[torch.as_tensor(i)])  # noqa: E731
    return DatasetSplits("user", tuple(x.shape[1:]), int(y.max()) + 1, pick(train), pick(search), pick(test), seed)


MIN_SPLIT_SAMPLES = {"train": 8, "search": 20, "test": 10}
"""Fewest samples per split: the search split's accuracy steps in 1/N, so fewer than 20 samples
cannot tell plans 5 points apart; an empty split scores every plan alike."""


def _check_data(model: nn.Module, example_input: torch.Tensor, data: DataLike) -> None:
    """Every split is usable before any work: shapes, finite inputs, enough samples, labels the model can output.

    An empty search split would score every plan 0.0 (the planner would choose blind), and
    labels outside the model's outputs would report a wrong accuracy without any error.
    """
    problems = []
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            classes = int(logits(model.eval()(example_input[:1])).shape[-1])
    except Exception:  # noqa: BLE001  (a model that rejects its example input is reported by analyze, with the shape)
        classes = None
    finally:
        for module, training in modes:
            module.training = training
    for name in ("train", "search", "test"):
        split = getattr(data, name, None)
        if split is None or not hasattr(split, "x") or not hasattr(split, "y"):
            problems.append(f"data has no {name} split with .x and .y")
            continue
        if len(split.x) < MIN_SPLIT_SAMPLES[name]:
            problems.append(f"the {name} split has {len(split.x)} samples, at least {MIN_SPLIT_SAMPLES[name]} are needed")
        elif tuple(split.x.shape[1:]) != tuple(example_input.shape[1:]):
            problems.append(f"{name}.x samples have shape {tuple(split.x.shape[1:])}, the example input {tuple(example_input.shape[1:])}")
        elif not torch.isfinite(split.x).all():
            problems.append(f"{name}.x holds NaN or inf")
        if len(split.x) != len(split.y):
            problems.append(f"{name} has {len(split.x)} inputs but {len(split.y)} labels")
        elif classes is not None and len(split.y) and (int(split.y.min()) < 0 or int(split.y.max()) >= classes):
            problems.append(
                f"{name}.y holds labels {int(split.y.min())}..{int(split.y.max())}, but the model outputs {classes} classes (0..{classes - 1})"
            )
    if problems:
        raise InvalidData("cannot use this data: " + "; ".join(problems) + ". Build it with metacompress.splits_from_arrays(x, y).")


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
    data: DataLike,
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
) -> CompressionResult:
    """Compress ``model`` for ``hardware`` under ``budget`` with a learned policy.

    The user's model is never modified. Every input is checked before the first
    expensive step.

    Args:
        model: a trained model (Conv1d/Conv2d/Linear layers are compressed).
        example_input: a batch it accepts, e.g. (N, C, H, W).
        data: ``.train``/``.search``/``.test`` splits with ``.x`` and ``.y`` (train: calibration
            and fine-tuning; search: the proxy the planner optimises; test: the report).
        hardware: preset name, ``sample:<archetype>:<seed>``, LUT CSV path or a ``Hardware``.
        budget: ``kind=fraction`` of the unpruned W8A8 cost, e.g. ``"latency=0.3"``.
        policy: a policy folder, or a shipped one by name: ``default`` (PPO, the default),
            ``rl2``, or a head meta-learner where shipped (``reptile``, ``maml``, ``meta-sgd``, ``meta-curvature``).
        few_shot: proxy evaluations to adapt with (0 = zero-shot, one rollout).
        finetune_steps: KD steps of the final recovery (batch 128, teacher = ``model``).
        seed: makes the whole call reproducible.
        frozen: module paths to keep unpruned at 8 bits (the head always is).
        max_prune: the largest prune ratio any unit may take.
        name: how the report names the model.
        planner: plan with this instead of a policy (e.g. ``HawqPlanner()`` or
            ``EvolutionPlanner()``; ``few_shot`` is then its evaluation budget, and 0 means
            the default of its ``plan``), so a baseline gets exactly the same evaluator,
            projection and report.

    Raises:
        MetacompressError: bad input (its message names the problem and the fix),
            ``InfeasibleBudget`` with the minimum achievable cost, ``PolicyError``.
    """
    start = time.perf_counter()
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    check_max_prune(max_prune)
    target = resolve_hardware(hardware)
    if few_shot < 0 or finetune_steps < 0:
        raise MetacompressError(f"few_shot and finetune_steps must be >= 0, got {few_shot} and {finetune_steps}")
    if planner is not None and policy is not None:
        raise MetacompressError("pass a policy or a planner, not both: the planner would ignore the policy")
    planner = planner or load_planner(policy, few_shot)
    few_shot = few_shot or _default_evaluations(planner)
    _check_data(model, example_input, data)
    modes = [(module, module.training) for module in model.modules()]  # the evaluator switches it to eval mode
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            evaluator = ModelEvaluator(model, data, frozen=tuple(frozen), search_finetune_steps=DEFAULT_SEARCH_FINETUNE_STEPS)
            task_name = f"{name} on {target.name} ({budget})"
            BudgetProjector(evaluator.spec, target, budget, max_prune).check_feasible(task_name)  # structure only: before the probes
            probes = compute_probes(evaluator, seed)
            context = TaskContext(evaluator, probes, target, budget, max_prune, name=task_name)
            scored = evaluate_planner(context, planner, few_shot, seed, finetune_steps)
            planning_seconds = time.perf_counter() - start - scored.finetune_seconds
        planned, compressed, test_compressed = scored.result, scored.final_model, scored.final_accuracy
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
            "cost_ratio": cost_ratio,
            "budget_ratio": cost_ratio / budget.fraction,
            "within_budget": context.projector.fits(plan.kept, plan.w_bits, plan.a_bits),
            "size_bits": size_bits(spec, plan.kept, plan.w_bits),
            "reference_size_bits": int(reference_cost(spec, "size")),
            "fp32_size_bits": spec.total_params * 32,
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
        decisions = decision_table(context, plan, planned.info.get("decisions"))
    finally:
        for module, training in modes:  # give the user back the modes they had
            module.training = training
    return CompressionResult(plan, compressed, decisions, summary, planned)

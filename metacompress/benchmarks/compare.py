"""``metacompress bench agents``: the learned agent against every baseline, on tasks it never saw.

Per (task, method, seed) run the method's planner picks a plan through the shared
evaluator and budget projection (``agents.planner``); its proxy accuracy change is
measured on the *search* split (the reward), and its final accuracy change on the
*test* split after exporting the plan and the same KD fine-tune on the train split
(``ModelEvaluator.final_accuracy``, seeded by the run's seed) for every method.
Identical plans on a model are fine-tuned once per seed. The evaluator's proxy cache
is emptied before every planner call, so each method pays for its own evaluations and
its wall time is honest. Nothing here is tuned on the tasks it reports.

Tasks are ordered cheapest first within each novelty (family, hardware, budget), the
novelties taken in turn, so "the first N tasks" always covers the three novelties
(order by the measured cost table in ``benchmarks.costs``, never by results).

Presets (exactly what each runs; estimates from ``benchmarks.costs``, one uncontended core
per worker, first-use probe computation not included):

- ``quick`` (estimated 3 min, 2 workers): the first 6 held-out tasks of the ordering (2 per
  novelty), seed 0, final fine-tune 100 KD steps. Every standard method runs on all 6
  tasks except ``ddpg-300``, ``random-300``, ``evolution-300`` and
  ``oracle-evolution-2000``, which run at full size on the first 3 tasks (one per novelty).
- ``full`` (estimated 44 min on an idle machine, 2 workers; must stay under 2 h): all 48
  held-out tasks, seeds 0, 1, 2, final fine-tune 100 KD steps (300 steps tripled the
  fine-tune time and measured close to 4 h on the shared dev box). ``zero-shot``, ``uniform`` and ``hawq`` run
  on all 48 tasks x 3 seeds; the 30-evaluation methods (``few-shot-resolve-30``,
  ``few-shot-sample-30``, ``few-shot-rl2-30``, ``few-shot-reptile-30``, ``random-30``, ``evolution-30``) on the
  first 24 tasks x seeds 0, 1; the 10x methods (``ddpg-300``, ``random-300``,
  ``evolution-300``) on the first 15 tasks x seed 0; ``oracle-evolution-2000`` on the
  first 6 tasks x seed 0. Every method on every task and seed would take about 23 h
  (``--preset full --no-limits --dry-run`` prints the estimate); the final fine-tunes
  alone of the three cheap methods take about half of the preset.

``--methods``, ``--seeds`` and ``--tasks`` replace a preset's lists (the limits above still
apply unless ``--no-limits``); methods whose policy folder is missing are skipped with a
note. Comparisons between methods that ran on different tasks are only made on the
(task, seed) pairs both ran (win-rates, the targets section of ``summary.md``).
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from metacompress.benchmarks.costs import estimated_run_seconds, evaluation_seconds
from metacompress.agents.registry import (
    POLICY_FLAGS,
    SHIPPED,
    STANDARD_METHODS,
    Method,
    PolicyPaths,
    build_planner,
    evaluate_planner,
    is_saved,
    is_shipped,
    load_policies,
    missing_policies,
    parse_method,
)
from metacompress.agents.train_config import validation_entries
from metacompress.compressors.budget import FEASIBILITY_TOLERANCE, UnitChoice
from metacompress.envs.executor import Executor, check_reachable, executor_problems, make_executor
from metacompress.envs.suite import SPLITS, SuiteTask, default_suite
from metacompress.envs.world import TaskWorld
from metacompress.errors import BenchConfigError, ExecutorError, MetacompressError

NOVELTIES = ("family", "hardware", "budget")
COLUMNS = (
    "task", "model", "hardware", "budget", "novelty", "method", "seed", "evaluation_budget", "evaluations_used",
    "proxy_change", "final_change", "final_accuracy", "base_test_accuracy", "cost_ratio", "budget_fraction",
    "budget_used", "budget_satisfied", "regime", "planning_seconds", "finetune_seconds", "finetune_steps",
)


@dataclass(frozen=True)
class Preset:
    """What a preset runs: tasks (first N of the ordering), seeds, methods, fine-tune, limits.

    ``limits`` holds (method, tasks, seeds): that method runs only on the first ``tasks``
    tasks and the first ``seeds`` seeds, so the expensive methods fit the time budget.
    """

    tasks: int | None
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    finetune_steps: int
    limits: tuple[tuple[str, int, int], ...] = ()
    workers: int = 1


_THIRTY = ("few-shot-resolve-30", "few-shot-sample-30", "few-shot-rl2-30", "few-shot-reptile-30", "few-shot-maml-30",
           "few-shot-meta-sgd-30", "few-shot-meta-curvature-30", "random-30", "evolution-30")
_TENFOLD = ("ddpg-300", "random-300", "evolution-300")
_ORACLE = "oracle-evolution-2000"
PRESETS = {
    "quick": Preset(6, (0,), STANDARD_METHODS, 100, tuple((m, 3, 1) for m in (*_TENFOLD, _ORACLE)), workers=2),
    "full": Preset(None, (0, 1, 2), STANDARD_METHODS, 100,
                   tuple((m, 24, 2) for m in _THIRTY) + tuple((m, 15, 1) for m in _TENFOLD) + ((_ORACLE, 6, 1),), workers=2),
}


@dataclass(frozen=True)
class AgentsBenchConfig:
    """The flags of ``bench agents``; None means "the preset's"."""

    preset: str = "quick"
    split: str = "heldout"
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    policies: PolicyPaths = field(default_factory=PolicyPaths)
    finetune_steps: int | None = None
    tasks: int | None = None
    workers: int | None = None
    limits: bool = True
    executor: str | None = None  # None: a process pool for more than one worker, else in-process
    ray_address: str | None = None


@dataclass(frozen=True)
class Run:
    """One (task, method, seed) run; ``order`` fixes its row's place in the results."""

    order: int
    entry: SuiteTask
    method: Method
    seed: int


@dataclass(frozen=True)
class BenchPlan:
    """Everything resolved and checked before the first expensive step."""

    config: AgentsBenchConfig
    tasks: tuple[SuiteTask, ...]
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    finetune_steps: int
    workers: int
    runs: tuple[Run, ...]
    notes: tuple[str, ...]

    def run_seconds(self, run: Run) -> float:
        """A run's estimated seconds on one uncontended core (``benchmarks.costs``)."""
        return estimated_run_seconds(run.entry.task.model, run.method, self.finetune_steps)

    def jobs(self) -> list[list[Run]]:
        """The runs grouped by model (a worker builds each model's evaluator once), largest first."""
        groups: dict[str, list[Run]] = {}
        for run in self.runs:
            groups.setdefault(run.entry.task.model, []).append(run)
        return sorted(groups.values(), key=lambda runs: -sum(map(self.run_seconds, runs)))

    @property
    def estimated_seconds(self) -> float:
        """Estimated wall time: the jobs dealt largest first to whichever of ``workers`` frees first."""
        loads = [0.0] * self.workers
        for job in self.jobs():
            loads[loads.index(min(loads))] += sum(map(self.run_seconds, job))
        return max(loads)

    def command(self, out: Path) -> str:
        """The explicit command line that reproduces this run (every resolved setting spelled out)."""
        c = self.config
        parts = ["metacompress", "bench", "agents", "--preset", c.preset, "--split", c.split,
                 "--methods", ",".join(m.name for m in self.methods), "--seeds", ",".join(map(str, self.seeds)),
                 "--finetune-steps", str(self.finetune_steps), "--workers", str(self.workers)]
        if c.executor is not None:
            parts += ["--executor", c.executor] + (["--ray-address", c.ray_address] if c.ray_address else [])
        if c.tasks is not None:
            parts += ["--tasks", str(c.tasks)]
        for which, path in c.policies.items():
            if path is not None and not is_shipped(path):  # shipped policies are the defaults: no flag needed
                parts += [POLICY_FLAGS[which], str(path)]
        if not c.limits:
            parts.append("--no-limits")
        return " ".join(shlex.quote(p) for p in parts + ["--out", str(out)])


def ordered_tasks(entries: Sequence[SuiteTask]) -> list[SuiteTask]:
    """Novelties in turn; within one, cheapest first (cost table), each model's first task before any repeat.

    So the first N tasks are cheap, cover every novelty and as many models as possible.
    """
    groups: dict[str, list[SuiteTask]] = {}
    for entry in sorted(entries, key=lambda e: (evaluation_seconds(e.task.model), e.task.id)):
        groups.setdefault(entry.novelty, []).append(entry)
    for novelty, group in groups.items():
        repeat = {id(e): sum(o.task.model == e.task.model for o in group[:i]) for i, e in enumerate(group)}
        groups[novelty] = sorted(group, key=lambda e: repeat[id(e)])  # stable: cost order within a repeat level
    names = [n for n in NOVELTIES if n in groups] + sorted(set(groups) - set(NOVELTIES))
    longest = max((len(g) for g in groups.values()), default=0)
    return [groups[n][i] for i in range(longest) for n in names if i < len(groups[n])]


def plan_runs(tasks: Sequence[SuiteTask], methods: Sequence[Method], seeds: Sequence[int],
              limits: Sequence[tuple[str, int, int]] = ()) -> list[Run]:
    """Every (task, seed, method) run, minus those a method's limit excludes."""
    cap = {name: (tasks_cap, seeds_cap) for name, tasks_cap, seeds_cap in limits}
    runs = []
    for t, entry in enumerate(tasks):
        for s, seed in enumerate(seeds):
            for method in methods:
                tasks_cap, seeds_cap = cap.get(method.name, (len(tasks), len(seeds)))
                if t < tasks_cap and s < seeds_cap:
                    runs.append(Run(len(runs), entry, method, seed))
    return runs


def prepare(config: AgentsBenchConfig, entries: Sequence[SuiteTask] | None = None) -> BenchPlan:
    """Resolve a config against its preset and check it all, before anything expensive.

    Args:
        config: the flags.
        entries: the suite tasks to draw from (default: the default suite's ``config.split``).

    Raises:
        BenchConfigError: listing every invalid setting with its fix.
        PolicyError: if a given policy folder is corrupt or of the wrong kind.
    """
    problems, methods = [], []
    if config.preset not in PRESETS:
        raise BenchConfigError(f"preset {config.preset!r} is unknown; use one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    if config.split not in (*SPLITS, "validation"):
        problems.append(f"split {config.split!r} is unknown; use heldout, validation (design choices) or train (to debug)")
    for name in config.methods if config.methods is not None else preset.methods:
        try:
            methods.append(parse_method(name))
        except MetacompressError as exc:
            problems.append(str(exc))
    if len({m.name for m in methods}) < len(methods):
        problems.append("--methods lists a method twice; name each once")
    seeds = tuple(config.seeds if config.seeds is not None else preset.seeds)
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        problems.append(f"--seeds {','.join(map(str, seeds)) or '(empty)'} must be distinct integers >= 0, e.g. 0,1,2")
    steps = config.finetune_steps if config.finetune_steps is not None else preset.finetune_steps
    if steps < 1:
        problems.append(f"--finetune-steps {steps} must be >= 1 (the final KD fine-tune; e.g. 300)")
    if config.tasks is not None and config.tasks < 1:
        problems.append(f"--tasks {config.tasks} must be >= 1")
    workers = config.workers if config.workers is not None else preset.workers
    problems += executor_problems(config.executor or "process", workers, config.ray_address)
    if config.ray_address not in (None, "auto") and not problems:
        try:
            check_reachable(config.ray_address)  # seconds, not an hour in
        except ExecutorError as exc:
            problems.append(str(exc))
    if problems:
        raise BenchConfigError("cannot run bench agents: " + "; ".join(problems))
    runnable, notes = missing_policies(methods, config.policies)
    loaded = load_policies(runnable, config.policies)  # fail now, not in a worker an hour in
    if "policy" in loaded and loaded["policy"][1].method != "residual":
        notes += [f"skipped {m.name}: it re-solves around a residual policy's plan; --policy is a "
                  f"{loaded['policy'][1].method} policy" for m in runnable if m.kind == "few-shot-resolve"]
        runnable = [m for m in runnable if m.kind != "few-shot-resolve"]
    if entries is None:
        entries = validation_entries() if config.split == "validation" else default_suite().entries(config.split)
    tasks = ordered_tasks(entries)[: config.tasks if config.tasks is not None else preset.tasks]
    limits = preset.limits if config.limits else ()
    for name, tasks_cap, seeds_cap in limits:
        if any(m.name == name for m in runnable) and (tasks_cap < len(tasks) or seeds_cap < len(seeds)):
            notes.append(f"{name} runs on the first {min(tasks_cap, len(tasks))} tasks x first {min(seeds_cap, len(seeds))} seed(s) only (preset limit, for time)")
    runs = plan_runs(tasks, runnable, seeds, limits)
    return BenchPlan(config, tuple(tasks), tuple(runnable), seeds, steps, workers, tuple(runs), tuple(notes))


def execute_runs(world: TaskWorld, runs: Sequence[Run], policies: dict[str, tuple], finetune_steps: int,
                 progress: Callable[[], None] | None = None) -> list[dict]:
    """Run each planner and fine-tune its plan; one result row per run (columns ``COLUMNS``).

    Args:
        world: builds (and caches) the tasks' contexts.
        runs: what to run.
        policies: loaded policies (``methods.load_policies``).
        finetune_steps: KD steps of the final fine-tune, the same for every method.
        progress: called once after each run.
    """
    planners = {r.method.name: build_planner(r.method, policies) for r in runs}
    finals: dict[tuple, tuple[float, float]] = {}  # (plan key, steps, seed) -> (test accuracy, seconds)
    bases: dict[str, float] = {}
    rows = []
    for run in runs:
        task = run.entry.task
        context = world.context(task)
        evaluator = context.evaluator
        scored = evaluate_planner(
            context, planners[run.method.name], run.method.evaluations, run.seed, finetune_steps, finals, cold_cache=True
        )
        result, planning, accuracy, finetune_seconds = scored.result, scored.planning_seconds, scored.final_accuracy, scored.finetune_seconds
        if task.model not in bases:
            bases[task.model] = evaluator.base_test_accuracy()
        base = bases[task.model]
        fraction = task.budget.fraction
        rows.append({
            "order": run.order, "task": task.id, "model": task.model, "hardware": task.hardware, "budget": str(task.budget),
            "novelty": run.entry.novelty, "method": run.method.name, "seed": run.seed,
            "evaluation_budget": run.method.evaluations, "evaluations_used": result.evaluations_used,
            "proxy_change": result.proxy_change, "final_change": accuracy - base, "final_accuracy": accuracy,
            "base_test_accuracy": base, "cost_ratio": result.cost_ratio, "budget_fraction": fraction,
            "budget_used": result.cost_ratio / fraction,
            "budget_satisfied": bool(result.cost_ratio <= fraction * (1 + FEASIBILITY_TOLERANCE)),
            "regime": budget_regime(context),
            "planning_seconds": planning, "finetune_seconds": finetune_seconds, "finetune_steps": finetune_steps,
        })
        if progress is not None:
            progress()
    return rows


def budget_regime(context) -> str:
    """``moderate`` if a uniform W4A4 plan (or gentler) fits the budget, the range users deploy; else ``tight``."""
    projector = context.projector
    w4a4 = projector.executed_vectors([UnitChoice(0.0, 4, 4)] * len(projector.decision_units))
    return "moderate" if projector.fits(*w4a4) else "tight"


def results_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows in run order, with exactly the ``COLUMNS``."""
    return pd.DataFrame(sorted(rows, key=lambda r: r["order"]), columns=["order", *COLUMNS]).drop(columns="order").reset_index(drop=True)


def run_comparison(world: TaskWorld, tasks: Sequence[SuiteTask], methods: Sequence[Method | str], seeds: Sequence[int],
                   policies: PolicyPaths = PolicyPaths(), finetune_steps: int = 300,
                   progress: Callable[[], None] | None = None) -> pd.DataFrame:
    """Compare methods on tasks and seeds in this process (the core of ``bench agents``).

    Methods that need a policy folder that is missing are left out (see ``missing_policies``).
    """
    parsed = [m if isinstance(m, Method) else parse_method(m) for m in methods]
    runnable, _ = missing_policies(parsed, policies)
    runs = plan_runs(tasks, runnable, seeds)
    return results_frame(execute_runs(world, runs, load_policies(runnable, policies), finetune_steps, progress))


@dataclass(frozen=True)
class BenchShipment:
    """What each ``bench agents`` worker builds once: a task world and the loaded policies.

    Shipped once per worker (``envs.executor``); jobs are one model's runs each, so a
    worker builds each model's evaluator once, and only run lists travel per job.
    """

    token: str
    world: Callable[[], TaskWorld]
    paths: PolicyPaths
    methods: tuple[Method, ...]

    def build(self) -> tuple[TaskWorld, dict[str, tuple]]:
        return self.world(), load_policies(list(self.methods), self.paths)


def _run_job(state: tuple[TaskWorld, dict[str, tuple]], job: tuple[list[Run], int]) -> list[dict]:
    world, policies = state
    runs, finetune_steps = job
    return execute_runs(world, runs, policies, finetune_steps)


def bench_executor(bench: BenchPlan) -> Executor:
    """The executor a benchmark's config asks for: in-process for one worker, else its backend."""
    c = bench.config
    backend = c.executor or ("process" if bench.workers > 1 else "inprocess")
    return make_executor(backend, bench.workers, c.ray_address)


def run_bench(bench: BenchPlan, progress: Callable[[], None] | None = None,
              world: Callable[[], TaskWorld] = TaskWorld, executor: Executor | None = None) -> pd.DataFrame:
    """Run a prepared benchmark, its jobs mapped over an executor (``envs.executor``).

    Args:
        bench: from ``prepare``.
        progress: called once per finished run (per job's run, as each job finishes, off this process).
        world: builds a task world (the zoo's by default), once per worker; picklable.
        executor: where jobs run (default: ``bench_executor(bench)``, closed at the end).

    Jobs are one model's runs each (``BenchPlan.jobs``); every result is seeded and the
    proxy cache is emptied per run, so rows do not depend on which worker ran them.
    """
    policies = bench.config.policies
    jobs = bench.jobs()
    own = executor is None
    executor = bench_executor(bench) if own else executor
    try:
        if executor.backend == "inprocess":
            return results_frame(execute_runs(world(), bench.runs, load_policies(list(bench.methods), policies),
                                              bench.finetune_steps, progress))
        shipment = BenchShipment(uuid.uuid4().hex, world, policies, bench.methods)

        def finished(i: int, _rows: list[dict]) -> None:
            for _ in jobs[i]:
                progress()

        results = executor.map(_run_job, [(runs, bench.finetune_steps) for runs in jobs], shipment,
                               finished if progress is not None else None)
    finally:
        if own:
            executor.close()
    return results_frame([row for rows in results for row in rows])


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder the run may not write before it starts (``write_run`` checks again at the end)."""
    from metacompress.compressors.runs import RunFolder

    RunFolder(out, "bench-agents", overwrite).check()


def default_out(bench: BenchPlan) -> Path:
    return Path("runs") / f"bench-{bench.config.preset}-s{'-'.join(map(str, bench.seeds))}"


def with_defaults(config: AgentsBenchConfig) -> AgentsBenchConfig:
    """Fill each policy folder not given with the shipped one, if the package ships it."""
    def filled(which: str, given: Path | None) -> Path | None:
        shipped = SHIPPED.get(which)
        return given if given is not None or shipped is None or not is_saved(shipped) else shipped

    return replace(config, policies=PolicyPaths(**{which: filled(which, given) for which, given in config.policies.items()}))

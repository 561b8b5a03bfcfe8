"""The task suite: seeded (model, hardware, budget) tasks and the held-out split.

What the default split holds out, so that "generalises" means something (DESIGN 7):

- whole model families: ``mobilenetv2`` (depthwise, inverted residuals) and
  ``transformer`` (attention + MLP) never appear in training;
- a whole hardware archetype: ``brick-fused`` (BitFusion-like) never appears in training;
- tighter budgets: held-out "budget" tasks draw from ``tight_budgets``, which lie entirely
  below the training range of their kind (``train_budgets``).

Each held-out task is tagged with what is new in it (``family``, ``hardware``,
``budget``). Training tasks use training families on presets and seeded samples of the
training archetypes, with budgets drawn from ``TRAIN_BUDGETS``. Tasks whose budget no
plan can meet are skipped at generation (checked on the model's structure, which does
not need trained weights), so every task in the suite is feasible.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from metacompress._version import __version__
from metacompress.compressors.graph import analyze
from metacompress.compressors.hardware import PRESETS
from metacompress.compressors.io import write_text_atomic
from metacompress.compressors.spec import ModelSpec
from metacompress.compressors.budget import DEFAULT_MAX_PRUNE
from metacompress.compressors.budget import BudgetProjector
from metacompress.compressors.budget import Budget
from metacompress.envs.tasks import Task, resolve_hardware, sampled_hardware_name
from metacompress.envs.zoo.catalog import ZOO, get_entry
from metacompress.envs.zoo.cache import default_cache_dir, make_model
from metacompress.errors import MetacompressError

log = logging.getLogger(__name__)

SUITE_FORMAT = 1
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class SuiteConfig:
    """How the default suite is generated (every field is part of its cache key)."""

    seed: int = 0
    train_tasks: int = 480
    heldout_tasks_per_kind: int = 16
    heldout_families: tuple[str, ...] = ("mobilenetv2", "transformer")
    heldout_archetypes: tuple[str, ...] = ("brick-fused",)
    train_archetypes: tuple[str, ...] = ("bit-serial", "fixed-int", "mcu", "sparse")
    sampled_hardware_per_archetype: int = 12
    # (low, high) fractions of the unpruned W8A8 cost
    # Training budgets span what deployments ask for (W4A4 is size 0.5 / BitOps 0.25);
    # held-out "budget" tasks are strictly tighter than any training budget of their kind.
    train_budgets: tuple[tuple[str, float, float], ...] = (
        ("latency", 0.3, 0.8),
        ("energy", 0.2, 0.6),
        ("size", 0.2, 0.5),
        ("bitops", 0.06, 0.3),
    )
    tight_budgets: tuple[tuple[str, float, float], ...] = (
        ("latency", 0.15, 0.3),
        ("energy", 0.1, 0.2),
        ("size", 0.1, 0.2),
        ("bitops", 0.02, 0.06),
    )
    max_prune: float = DEFAULT_MAX_PRUNE

    @property
    def whole_budget_range(self) -> tuple[tuple[str, float, float], ...]:
        """Per kind, from the lowest tight budget to the highest training budget (generated tasks draw from it)."""
        tight = {kind: low for kind, low, _ in self.tight_budgets}
        return tuple((kind, min(tight.get(kind, low), low), high) for kind, low, high in self.train_budgets)

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True) + __version__
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SuiteTask:
    """A task of the suite with its split and what is new in it (held-out only)."""

    task: Task
    split: str
    novelty: str = ""  # "family", "hardware" or "budget" for held-out tasks

    def to_dict(self) -> dict:
        return {**self.task.to_dict(), "split": self.split, "novelty": self.novelty}


@dataclass(frozen=True)
class TaskSuite:
    """Tasks by split; ``split(name)`` returns plain ``Task``s for the envs."""

    config: SuiteConfig
    tasks: tuple[SuiteTask, ...] = field(default=())

    def split(self, name: str) -> list[Task]:
        if name not in SPLITS:
            raise MetacompressError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return [t.task for t in self.tasks if t.split == name]

    def entries(self, name: str) -> list[SuiteTask]:
        return [t for t in self.tasks if t.split == name]

    def to_frame(self, split: str | None = None):
        import pandas as pd

        rows = [t.to_dict() for t in self.tasks if split is None or t.split == split]
        return pd.DataFrame(rows, columns=["split", "novelty", "model", "hardware", "budget"])


@lru_cache(maxsize=None)
def model_spec(model_id: str) -> ModelSpec:
    """The structure of a zoo model, from an untrained instance (weights do not matter)."""
    entry = get_entry(model_id)
    return analyze(make_model(entry).eval(), torch.zeros((2, *entry.input_shape)))


def _family(model_id: str) -> str:
    return get_entry(model_id).family


def _sampled_hardware(archetypes: tuple[str, ...], per_archetype: int, seed: int) -> list[str]:
    return [sampled_hardware_name(a, seed * 1000 + i) for a in archetypes for i in range(per_archetype)]


def _hardware_pool(archetypes: tuple[str, ...], per_archetype: int, seed: int) -> list[str]:
    presets = [name for name, hw in PRESETS.items() if hw.archetype in archetypes]
    return presets + _sampled_hardware(archetypes, per_archetype, seed)


def _feasible(task: Task, max_prune: float) -> bool:
    spec = model_spec(task.model)
    hardware = resolve_hardware(task.hardware)
    return BudgetProjector(spec, hardware, task.budget, max_prune).is_feasible()


def _draw_tasks(rng, models, hardware, budgets, count, max_prune, split, novelty) -> list[SuiteTask]:
    """``count`` feasible tasks, the budget kinds in turn (so every kind is represented)."""
    tasks: list[SuiteTask] = []
    seen: set[str] = set()
    for slot in range(count):
        kind, low, high = budgets[slot % len(budgets)]
        for _ in range(200):
            fraction = float(np.round(np.exp(rng.uniform(np.log(low), np.log(high))), 4))
            task = Task(models[int(rng.integers(len(models)))], hardware[int(rng.integers(len(hardware)))], Budget(kind, fraction))
            if task.id not in seen and _feasible(task, max_prune):
                seen.add(task.id)
                tasks.append(SuiteTask(task, split, novelty))
                break
    return tasks


def sampled_tasks(models: list[str], count: int, budgets: tuple[tuple[str, float, float], ...],
                  config: SuiteConfig = SuiteConfig(), seed: int = 0, novelty: str = "",
                  hardware_seed: int | None = None) -> list[SuiteTask]:
    """``count`` feasible train-split tasks on ``models``: training hardware, budgets drawn from ``budgets``.

    What widens the world beyond the default suite without touching it: the generated
    networks' training tasks (``generated_tasks``) and the validation split's tasks
    (``agents.train_config.validation_entries``). ``hardware_seed`` replaces the training
    hardware by new instances of the training archetypes drawn with that seed (no presets):
    hardware no training task runs on, which the suite's own seeds never draw when it
    differs from ``config.seed`` and ``config.seed + 1`` (the held-out pool's).
    """
    rng = np.random.default_rng(seed)
    if hardware_seed is None:
        hardware = _hardware_pool(config.train_archetypes, config.sampled_hardware_per_archetype, config.seed)
    else:
        hardware = _sampled_hardware(config.train_archetypes, config.sampled_hardware_per_archetype, hardware_seed)
    return _draw_tasks(rng, models, hardware, budgets, count, config.max_prune, "train", novelty)


def generated_tasks(models: list[str], count: int, config: SuiteConfig = SuiteConfig(), seed: int = 0) -> list[Task]:
    """``count`` feasible training tasks on generated models: training hardware, budgets over the whole range.

    They widen the training world beyond the hand-written families, and their budgets
    reach down into the tight range (``SuiteConfig.whole_budget_range``) so that the
    learned planner is not asked to extrapolate to budgets the solver already handles
    (issue 12, item 3). The held-out split is untouched: no generated network equals a
    held-out model (``envs.zoo.generator``), and the held-out "budget" tasks keep models,
    hardware and tight budgets never seen together in training; what they no longer test
    is a budget range never seen at all.
    """
    return [t.task for t in sampled_tasks(models, count, config.whole_budget_range, config, seed + 7)]


def generate_suite(config: SuiteConfig = SuiteConfig()) -> TaskSuite:
    """Generate the suite (seeded). Prefer ``default_suite()``, which caches it on disk."""
    rng = np.random.default_rng(config.seed)
    all_models = [e.id for e in ZOO]
    train_models = [m for m in all_models if _family(m) not in config.heldout_families]
    heldout_models = [m for m in all_models if _family(m) in config.heldout_families]
    train_hw = _hardware_pool(config.train_archetypes, config.sampled_hardware_per_archetype, config.seed)
    heldout_hw = _hardware_pool(config.heldout_archetypes, config.sampled_hardware_per_archetype, config.seed + 1)
    n = config.heldout_tasks_per_kind
    tasks = _draw_tasks(rng, train_models, train_hw, config.train_budgets, config.train_tasks, config.max_prune, "train", "")
    tasks += _draw_tasks(rng, heldout_models, train_hw, config.train_budgets, n, config.max_prune, "heldout", "family")
    tasks += _draw_tasks(rng, train_models, heldout_hw, config.train_budgets, n, config.max_prune, "heldout", "hardware")
    tasks += _draw_tasks(rng, train_models, train_hw, config.tight_budgets, n, config.max_prune, "heldout", "budget")
    return TaskSuite(config, tuple(tasks))


def default_suite(config: SuiteConfig = SuiteConfig(), cache_dir: Path | None = None) -> TaskSuite:
    """The suite for ``config``, generated once and cached as JSON next to the zoo."""
    return _cached_suite(config, str(cache_dir or default_cache_dir()))


@lru_cache(maxsize=4)
def _cached_suite(config: SuiteConfig, cache_dir: str) -> TaskSuite:
    path = Path(cache_dir) / f"suite-{config.key()}.json"
    if path.exists():
        try:
            data = json.loads(path.read_text())
            tasks = tuple(SuiteTask(Task.from_dict(d), d["split"], d["novelty"]) for d in data["tasks"])
            return TaskSuite(config, tasks)
        except (json.JSONDecodeError, KeyError, TypeError, MetacompressError):
            log.warning("suite cache %s is unreadable; regenerating it", path)
    suite = generate_suite(config)
    write_text_atomic(path, json.dumps({"format": SUITE_FORMAT, "tasks": [t.to_dict() for t in suite.tasks]}))
    return suite

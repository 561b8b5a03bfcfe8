"""The world tasks live in: zoo models, their evaluators and probes, built lazily and cached.

Many tasks share one model (different hardware and budgets), and building a model's
evaluator and probes is the expensive part, so a ``TaskWorld`` keeps one evaluator per
model and one context per task for the life of the process (one per env worker).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from torch import nn

from metacompress.compressors.budget import DEFAULT_MAX_PRUNE
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import DataLike, ModelEvaluator
from metacompress.envs.probes import ModelProbes, load_or_compute_probes
from metacompress.envs.tasks import Task, resolve_hardware
from metacompress.envs.zoo.cache import default_cache_dir, load_zoo_model

log = logging.getLogger(__name__)

# Calibration only (BatchNorm + activation ranges), no KD steps: `bench fidelity` measured
# Spearman 0.82 (mean of 3 models) against the final fine-tuned accuracy, vs 0.85 with 10
# KD steps at 5-8x the cost per evaluation; on 2 cores the cheaper reward buys more episodes.
DEFAULT_SEARCH_FINETUNE_STEPS = 0


class TaskWorld:
    """Lazily built evaluators (per model) and contexts (per task).

    Args:
        cache_dir: the zoo cache (default: ``$METACOMPRESS_CACHE/zoo`` or ``~/.cache/metacompress/zoo``).
        search_finetune_steps: KD steps in every proxy evaluation (see ``bench fidelity``).
        max_prune: the largest prune ratio any unit may take.
        model_loader: ``model_id -> (trained model, data splits)``; default: the zoo
            (trained and cached on first use). Tests pass tiny models here.
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        search_finetune_steps: int = DEFAULT_SEARCH_FINETUNE_STEPS,
        max_prune: float = DEFAULT_MAX_PRUNE,
        model_loader: Callable[[str], tuple[nn.Module, DataLike]] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.search_finetune_steps = search_finetune_steps
        self.max_prune = max_prune
        self.model_loader = model_loader or self._zoo_model
        self._models: dict[str, tuple[ModelEvaluator, ModelProbes]] = {}
        self._contexts: dict[str, TaskContext] = {}

    def _zoo_model(self, model_id: str) -> tuple[nn.Module, DataLike]:
        model, data, _ = load_zoo_model(model_id, self.cache_dir)
        return model, data

    def model(self, model_id: str) -> tuple[ModelEvaluator, ModelProbes]:
        """The evaluator and probes of a model (a zoo model is trained and cached on first use)."""
        if model_id not in self._models:
            model, data = self.model_loader(model_id)
            evaluator = ModelEvaluator(model, data, search_finetune_steps=self.search_finetune_steps)
            probes = load_or_compute_probes(evaluator, self.cache_dir / f"{model_id}.probes.json")
            self._models[model_id] = (evaluator, probes)
        return self._models[model_id]

    def context(self, task: Task) -> TaskContext:
        """The ready-to-run context of ``task`` (raises ``InfeasibleBudget`` if it cannot fit)."""
        if task.id not in self._contexts:
            evaluator, probes = self.model(task.model)
            hardware = resolve_hardware(task.hardware)
            self._contexts[task.id] = TaskContext(evaluator, probes, hardware, task.budget, self.max_prune, name=task.id)
        return self._contexts[task.id]

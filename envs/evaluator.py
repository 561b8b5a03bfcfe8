"""Scoring plans for one model: the proxy on the search split, the final on the test split.

One ``ModelEvaluator`` per model is shared by every task on that model (many hardware
targets and budgets): it holds the analysis, the search-mode working copy and a cache of
proxy scores keyed by the executed plan, so a plan already scored costs nothing.

Every score is the evaluator's ``Metric`` (top-1 accuracy unless the user gives one).
Honest evaluation: the proxy (the RL reward) only ever reads the *search* split; the
final score (what reports quote) is measured on the *test* split after exporting
the plan and a short knowledge-distillation fine-tune on the *train* split.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from types import SimpleNamespace
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Callable, Protocol, Sequence

import cloudpickle
import numpy as np

import torch
from torch import nn

from metacompress.compressors.export import export, recover
from metacompress.compressors.graph import ModelGraph, build_graph
from metacompress.compressors.masking import SearchModel
from metacompress.compressors.plan import Plan
from metacompress.compressors.metrics import TOP1, Distillation, LossFn, Metric, check_output_kind, class_dim, distillation_loss, logits
from metacompress.compressors.recovery import batches_of
from metacompress.compressors.surgery import needs_plain_copy, plain_copy
from metacompress.envs.executor import Executor, InProcessExecutor, timed
from metacompress.envs.zoo.datasets import Split

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 128
# The proxy scores a fixed, seeded subset of at most this many search-split samples:
# resolution 0.1 point, and twice as fast as 2,000 on the larger datasets.
PROXY_SAMPLES = 1000


class SplitLike(Protocol):
    """One split: inputs ``x`` (N, ...) and targets ``y`` (N, ...): class ids, or any tensor a user metric reads."""

    x: torch.Tensor
    y: torch.Tensor


class DataLike(Protocol):
    """What an evaluator reads of a dataset: three splits of (x, y)."""

    train: SplitLike
    search: SplitLike
    test: SplitLike


@dataclass
class EvaluationStats:
    """Counters for speed reports: evaluations run, cache hits, seconds in each."""

    evaluations: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


@dataclass
class ModelEvaluator:
    """Scores plans for one model.

    Args:
        model: the trained original model (never modified).
        data: its dataset splits.
        frozen: module paths to keep uncompressed besides the classifier head.
        calibration_samples: train-split samples used for BatchNorm/activation calibration.
        proxy_samples: search-split samples the proxy scores (a fixed seeded subset).
        search_finetune_steps: KD steps inside every proxy evaluation (0 = calibration only).
        metric: what every score is (default top-1 accuracy); see ``metacompress.compressors.metrics``.
        output_kind: what the model's first output is: ``"logits"``, ``"probabilities"`` or
            ``"regression"``; picks the distillation and curvature losses.
        loss: a user distillation ``loss(student_out, teacher_out)`` replacing the output kind's.
        executor: where ``proxy_accuracies`` runs a batch's new evaluations (in-process by
            default; see ``envs.executor``). Single ``proxy_accuracy`` calls always run here.
    """

    model: nn.Module
    data: DataLike
    frozen: tuple[str, ...] = ()
    calibration_samples: int = CALIBRATION_SAMPLES
    proxy_samples: int = PROXY_SAMPLES
    search_finetune_steps: int = 0
    metric: Metric = TOP1
    output_kind: str = "logits"
    loss: LossFn | None = None
    graph: ModelGraph = field(init=False)
    search: SearchModel = field(init=False)
    base_search_accuracy: float = field(init=False)
    class_axis: int = field(init=False)  # where the outputs' class scores are: 1 for a segmentation map, else -1
    stats: EvaluationStats = field(default_factory=EvaluationStats)
    executor: Executor = field(default_factory=InProcessExecutor, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False)
    _shipment: "EvaluatorShipment | None" = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_output_kind(self.output_kind)
        if needs_plain_copy(self.model):  # a private copy: the user's model keeps its weight norm and attention
            self.model = plain_copy(self.model)
        self.model = self.model.eval()
        example = self.data.train.x[:8]
        self.graph = build_graph(self.model, example, self.frozen)
        self.calibration = self.calibration_batches()
        self.search = SearchModel(self.model, self.graph, self.calibration)
        search = self.data.search
        subset = torch.randperm(len(search.x), generator=torch.Generator().manual_seed(0))[: self.proxy_samples].sort().values
        self.proxy_x, self.proxy_y = search.x[subset], search.y[subset]
        with torch.no_grad():
            self.class_axis = class_dim(logits(self.model(self.proxy_x[:1])), self.proxy_y[:1]) or -1
        self.base_search_accuracy = self.search_score(self.model)

    @property
    def spec(self):
        return self.graph.spec

    @property
    def distillation(self) -> Distillation:
        """The recovery's loss: the user's ``loss``, else the output kind's (a dense map's KL: over its class axis)."""
        if self.loss is None and self.output_kind == "logits" and self.class_axis != -1:
            return partial(distillation_loss, "logits", class_axis=self.class_axis)
        return self.loss or self.output_kind

    def search_score(self, model: nn.Module) -> float:
        """``model``'s metric on the proxy's search-split subset (what the planner optimises)."""
        return self.metric.score(model, self.proxy_x, self.proxy_y)

    def test_score(self, model: nn.Module) -> float:
        """``model``'s metric on the test split (what reports quote)."""
        return self.metric.score(model, self.data.test.x, self.data.test.y)

    def calibration_batches(self) -> list[torch.Tensor]:
        """A fixed random subset of the train split, in fixed batches (identical in both modes).

        Random, not the first samples: a split stored in class order would otherwise
        recalibrate BatchNorm on one class.
        """
        order = torch.randperm(len(self.data.train.x), generator=torch.Generator().manual_seed(0))
        return batches_of(self.data.train.x[order[: self.calibration_samples]], CALIBRATION_BATCH)

    def proxy_accuracy(self, plan: Plan, finetune_steps: int | None = None) -> float:
        """Search-split metric of ``plan`` in search mode (cached by executed plan).

        Args:
            plan: the executed plan.
            finetune_steps: KD steps before scoring; default ``search_finetune_steps``.
        """
        steps = self.search_finetune_steps if finetune_steps is None else finetune_steps
        key = (plan.key(), steps)
        if key in self._cache:
            self.stats.cache_hits += 1
            return self._cache[key]
        start = time.perf_counter()
        if steps:
            compressed = self.search.finetune(plan, self.model, self.data.train.x, steps, loss=self.distillation)
        else:
            compressed = self.search.apply(plan)
        value = self.search_score(compressed)
        self.stats.evaluations += 1
        self.stats.seconds += time.perf_counter() - start
        self._cache[key] = value
        return value

    def proxy_accuracies(self, plans: Sequence[Plan], finetune_steps: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> list[float]:
        """``proxy_accuracy`` of each plan, the new distinct ones evaluated together on ``executor``.

        Same values as one ``proxy_accuracy`` call per plan (each worker rebuilds this
        evaluator from the same weights and data and scores a plan deterministically), and
        the same ``stats.evaluations``; ``stats.seconds`` sums the workers' seconds.
        ``progress(done, total)`` is called here as plans are scored (cached ones count as done).
        """
        steps = self.search_finetune_steps if finetune_steps is None else finetune_steps
        if self.executor.backend == "inprocess":
            scores = []
            for plan in plans:
                scores.append(self.proxy_accuracy(plan, steps))
                if progress is not None:
                    progress(len(scores), len(plans))
            return scores
        new: dict[tuple, Plan] = {}
        for plan in plans:
            key = (plan.key(), steps)
            if key not in self._cache and key not in new:
                new[key] = plan
        if new:
            done = len(plans) - len(new)  # the cached ones

            def finished(_: int, __: Any) -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress(done, len(plans))

            scored = self.executor.map(timed(_score_plan), [(plan, steps) for plan in new.values()], self.shipment(), finished)
            for key, (value, seconds) in zip(new, scored):
                self._cache[key] = value
                self.stats.evaluations += 1
                self.stats.seconds += seconds
        self.stats.cache_hits += len(plans) - len(new)
        return [self._cache[(plan.key(), steps)] for plan in plans]

    def final_accuracies(self, plans: Sequence[Plan], finetune_steps: int, seed: int = 0,
                         progress: Callable[[int], None] | None = None) -> list[float]:
        """``final_accuracy`` of each plan (in order), run on ``executor``; ``progress(i)`` as plan ``i`` finishes."""
        items = [(plan, finetune_steps, seed) for plan in plans]
        if self.executor.backend == "inprocess":  # this evaluator itself, not a rebuilt copy
            results = []
            for i, item in enumerate(items):
                results.append(_final_accuracy(self, item))
                if progress is not None:
                    progress(i)
            return results
        return self.executor.map(_final_accuracy, items, self.shipment(), (lambda i, _: progress(i)) if progress else None)

    def shipment(self) -> "EvaluatorShipment":
        """This evaluator as a recipe workers rebuild it from (made once; see ``EvaluatorShipment``)."""
        if self._shipment is None:
            self._shipment = EvaluatorShipment.of(self)
        return self._shipment

    def clear_cache(self) -> None:
        """Forget every scored plan (a benchmark run then pays for its own evaluations)."""
        self._cache.clear()

    def proxy_change(self, plan: Plan, finetune_steps: int | None = None) -> float:
        """Proxy metric minus the original model's, on the search split (the reward)."""
        return self.proxy_accuracy(plan, finetune_steps) - self.base_search_accuracy

    def base_test_accuracy(self) -> float:
        """The original model's metric on the test split."""
        return self.test_score(self.model)

    def final_model(self, plan: Plan, finetune_steps: int, seed: int = 0, lr: float = 1e-3) -> nn.Module:
        """Export ``plan`` and recover it with a KD fine-tune on the train split."""
        compressed = export(self.model, plan, self.data.train.x[:8], self.calibration, graph=self.graph)
        return recover(compressed, self.model, self.data.train.x, finetune_steps, self.calibration, seed=seed, lr=lr, loss=self.distillation)

    def final_accuracy(self, plan: Plan, finetune_steps: int, seed: int = 0) -> float:
        """Test-split metric of the exported, fine-tuned plan (what reports quote)."""
        return self.test_score(self.final_model(plan, finetune_steps, seed))



def _final_accuracy(evaluator: ModelEvaluator, item: tuple[Plan, int, int]) -> float:
    plan, steps, seed = item
    return evaluator.final_accuracy(plan, steps, seed)


def _score_plan(evaluator: ModelEvaluator, item: tuple[Plan, int]) -> float:
    plan, steps = item
    return evaluator.proxy_accuracy(plan, steps)


def _numpy(tensor: torch.Tensor) -> Any:
    """A tensor as a numpy array (shipped zero-copy by Ray), or itself if numpy lacks its dtype."""
    try:
        return tensor.detach().cpu().numpy()
    except TypeError:  # bfloat16 and other dtypes numpy has no type for
        return tensor.detach().cpu()


def _tensor(array: Any) -> torch.Tensor:
    return torch.tensor(array) if isinstance(array, np.ndarray) else array.clone()


@dataclass(frozen=True)
class EvaluatorShipment:
    """What a worker needs to rebuild a ``ModelEvaluator``: shipped once per worker (``envs.executor``).

    ``skeleton`` is the model with every parameter and buffer on the meta device (the
    architecture only, no weights); ``tensors`` are its parameters and buffers (persistent
    or not) and the three splits, as numpy arrays. The evaluator's cache stays here.
    """

    token: str
    skeleton: nn.Module
    tensors: dict[str, Any]
    frozen: tuple[str, ...]
    calibration_samples: int
    proxy_samples: int
    search_finetune_steps: int
    metric: Metric
    output_kind: str
    loss: LossFn | None

    @classmethod
    def of(cls, evaluator: ModelEvaluator) -> "EvaluatorShipment":
        model = evaluator.model
        tensors = {f"model.{name}": _numpy(t) for name, t in model.named_parameters(remove_duplicate=False)}
        tensors.update({f"model.{name}": _numpy(t) for name, t in model.named_buffers(remove_duplicate=False)})
        for split in ("train", "search", "test"):
            tensors[f"{split}.x"] = _numpy(getattr(evaluator.data, split).x)
            tensors[f"{split}.y"] = _numpy(getattr(evaluator.data, split).y)
        skeleton = copy.deepcopy(model).to("meta")  # never the user's model: a copy, then its weights dropped
        return cls(uuid.uuid4().hex, skeleton, tensors, tuple(evaluator.frozen), evaluator.calibration_samples,
                   evaluator.proxy_samples, evaluator.search_finetune_steps, evaluator.metric,
                   evaluator.output_kind, evaluator.loss)

    def __reduce__(self):
        """Pickled with cloudpickle, so the model's classes and a user metric or loss travel by value.

        A worker process cannot import what the user defined outside an installed package:
        a ``--model file.py:factory`` file (loaded under a module name no worker knows), a
        script's ``__main__`` or a notebook cell. Plain pickle stores such classes by name and
        the worker fails to find them; cloudpickle stores their code when their module is not
        importable by name. Only the fields that carry code go through it; the arrays stay
        plain pickle's (no second copy of the data in memory).
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        code = cloudpickle.dumps({name: values.pop(name) for name in ("skeleton", "metric", "loss")})
        return _shipment_from_bytes, (code, values)

    def build(self) -> ModelEvaluator:
        """The evaluator, rebuilt on a worker from the skeleton and the shipped arrays."""
        model = copy.deepcopy(self.skeleton)
        for name, array in self.tensors.items():
            if not name.startswith("model."):
                continue
            owner_path, _, leaf = name[len("model."):].rpartition(".")
            owner = model.get_submodule(owner_path)
            if leaf in owner._parameters:
                old = owner._parameters[leaf]
                owner._parameters[leaf] = nn.Parameter(_tensor(array), requires_grad=old.requires_grad)
            else:
                owner._buffers[leaf] = _tensor(array)
        splits = {name: Split(_tensor(self.tensors[f"{name}.x"]), _tensor(self.tensors[f"{name}.y"]))
                  for name in ("train", "search", "test")}
        return ModelEvaluator(model, SimpleNamespace(**splits), self.frozen, self.calibration_samples,
                              self.proxy_samples, self.search_finetune_steps, self.metric, self.output_kind, self.loss)


def _shipment_from_bytes(code: bytes, values: dict) -> EvaluatorShipment:
    return EvaluatorShipment(**cloudpickle.loads(code), **values)

"""How a plan is scored and distilled: the metric, the model's output kind, and the losses that follow from it.

A model is scored by a ``Metric``: ``fn(outputs, targets) -> float``, higher is better, over
a whole split at once (so a metric that is not a mean over samples, e.g. an F1 or a
within-50-cents rate, is exact). Top-1 accuracy is the default. Everything that scores a
plan (the planner's proxy, the env's reward, the probes, the recovered model, the report)
reads the same ``Metric``.

The output kind says what the model's first output tensor means, and so which loss
compares a student with its teacher (recovery) and a model with its targets (curvature):

==============  ==========================================  ====================================
kind            distillation (student vs teacher)           task loss (curvature probes)
==============  ==========================================  ====================================
logits          KL of softmax(z / T) (Hinton 2015)           cross-entropy on class ids, else MSE
probabilities   MSE of the probabilities                     NLL of class ids, else MSE
regression      MSE of the outputs                           MSE to the targets
==============  ==========================================  ====================================

Class ids may be one per sample or one per position of a dense output (a token's, a
pixel's; see ``class_dim``): a segmentation map is scored by pixel accuracy, its curvature
loss is the per-pixel cross-entropy, and its distillation is the KL over the class axis.

Softmax-distilling probabilities is what this module exists to prevent: sigmoid outputs in
[0, 1] over 360 bins give targets ``softmax(p / T)`` within 0.001 nats of uniform, and the
student learns nothing from them.

This module holds the output-tensor helpers too, because recovery and the metric both read
a model's output and recovery imports this module (never the other way round).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

from metacompress.errors import MetacompressError

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("logits", "probabilities", "regression")
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Distillation = Union[str, LossFn]
"""An output kind (its loss from the table above) or a user ``loss(student_out, teacher_out) -> scalar tensor``."""
SCORE_BATCH = 1024


def output_tensors(output) -> list[torch.Tensor]:
    """Every tensor of a model's output: the tensor itself, or a tuple/list/dict's tensors in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    return [t for item in items for t in output_tensors(item)]


def logits(output) -> torch.Tensor:
    """The scored output of a model: the output, or the first tensor of a tuple/list/dict.

    Models that return ``(logits, embedding)`` or ``{"logits": ..., "aux": ...}`` put the
    scores first, so the metric, distillation and the probes read that one.
    """
    tensors = output_tensors(output)
    if not tensors:
        raise MetacompressError(f"the model returned {type(output).__name__}, which holds no tensor; return the scores (N, ...) first")
    return tensors[0]


def top1(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy: the fraction of predictions whose largest score is at the target class id.

    A prediction is a row of (N, C) scores, or one position of a dense output: a token of
    (N, T, C) or a pixel of a (N, C, H, W) segmentation map (see ``class_dim``).
    """
    dim = class_dim(outputs, targets)
    hits = outputs.argmax(dim=-1 if dim is None else dim) == targets
    return int(hits.sum()) / targets.numel() if targets.numel() else 0.0  # exact: a count over every prediction


def class_dim(outputs: torch.Tensor, targets: torch.Tensor) -> int | None:
    """The axis of ``outputs`` that holds the class scores integer ``targets`` index, else None.

    Compared per sample, so the batch sizes may differ. -1 when a sample's targets have its
    outputs' shape without the last axis: one class id per row ((N, C) against (N,)) or per
    token ((N, T, C) against (N, T)). 1 when they drop axis 1: a dense map ((N, C, H, W)
    against (N, H, W)), PyTorch's layout for segmentation. Checked in that order, so a
    square (N, C, C) reads as rows.
    """
    if targets.is_floating_point() or targets.is_complex() or outputs.ndim != targets.ndim + 1:
        return None
    sample, wanted = tuple(outputs.shape[1:]), tuple(targets.shape[1:])
    if sample[:-1] == wanted:
        return -1
    if sample[1:] == wanted:
        return 1
    return None


def is_class_ids(targets: torch.Tensor) -> bool:
    """Whether targets are one integer class id per sample (what top-1 and stratified splits need)."""
    return targets.ndim == 1 and not targets.is_floating_point() and not targets.is_complex()


@dataclass(frozen=True)
class Metric:
    """A score of a model's outputs against targets; higher is better.

    Args:
        fn: ``fn(outputs, targets) -> float`` over a whole split; ``outputs`` is the first
            output tensor of every batch, concatenated (N, ...), on the CPU.
        name: how reports name it, e.g. ``"top-1 accuracy"`` or ``"cents50"``.
    """

    fn: MetricFn
    name: str

    @torch.no_grad()
    def score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = SCORE_BATCH) -> float:
        """The metric of ``model`` in eval mode on (x, y), fed in batches.

        Raises:
            MetacompressError: the metric raised, or returned something that is not a finite number.
        """
        model.eval()
        outputs = [logits(model(x[start : start + batch_size])).detach().cpu() for start in range(0, len(x), batch_size)]
        scores = torch.cat(outputs) if outputs else torch.empty(0)
        try:
            value = self.fn(scores, y.cpu())
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
        except Exception as exc:  # noqa: BLE001  (a user function: report it with the shapes it got)
            raise MetacompressError(
                f"metric {self.name!r} failed on outputs {tuple(scores.shape)} and targets {tuple(y.shape)}: {exc}; "
                "it must be fn(outputs, targets) -> float (higher is better)"
            ) from exc
        if not math.isfinite(value):
            raise MetacompressError(f"metric {self.name!r} returned {value} on outputs {tuple(scores.shape)}; it must return a finite float")
        return value


TOP1 = Metric(top1, "top-1 accuracy")


def r_squared(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The coefficient of determination over every output value: 1 - SSE / SST.

    1 is an exact fit and 0 predicts no better than each output's mean target, so a point
    (0.01) means what an accuracy point means: a hundredth of the scale. SST measures each
    output position around its own mean over the samples (a forecast's horizon steps, a
    vector's components), pooled, as one number over the whole split.
    """
    targets = targets.double()
    predicted = outputs.double().reshape(targets.shape)
    spread = ((targets - targets.mean(dim=0)) ** 2).sum()
    return float(1.0 - ((predicted - targets) ** 2).sum() / spread.clamp_min(torch.finfo(torch.float64).tiny))


R2 = Metric(r_squared, "R2")


def default_metric(targets: torch.Tensor) -> Metric:
    """What plans are scored by when the user names no metric: R2 for real-valued targets, else top-1."""
    return R2 if targets.is_floating_point() else TOP1


def resolve_metric(metric: Metric | MetricFn | None) -> Metric:
    """A ``Metric`` from ``None`` (top-1), a ``Metric``, or a bare ``fn(outputs, targets) -> float`` (named after it)."""
    if metric is None:
        return TOP1
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise MetacompressError(f"metric must be a callable fn(outputs, targets) -> float, got {type(metric).__name__}")
    return Metric(metric, getattr(metric, "__name__", type(metric).__name__))


def check_output_kind(kind: str) -> str:
    """``kind`` if it is one of ``OUTPUT_KINDS``, else a ``MetacompressError`` listing them."""
    if kind not in OUTPUT_KINDS:
        raise MetacompressError(f"output kind {kind!r} is unknown; use one of {', '.join(OUTPUT_KINDS)}")
    return kind


def detect_output_kind(outputs: torch.Tensor) -> str:
    """The output kind when it is unambiguous, else ``"logits"`` (the documented default).

    One value per sample ((N,) or (N, 1) floats that are not all in [0, 1]) is a regression;
    rows that are non-negative and sum to 1 are a softmax's probabilities. Anything else
    (sigmoid outputs included, which could be either) stays logits: pass ``output_kind``.
    """
    outputs = outputs.detach().float()
    if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
        return "regression" if bool((outputs < 0).any() or (outputs > 1).any()) else "logits"
    if outputs.ndim == 2 and bool((outputs >= 0).all()) and bool(torch.allclose(outputs.sum(dim=-1), torch.ones(len(outputs)), atol=1e-4)):
        return "probabilities"
    return "logits"


def distillation_loss(distillation: Distillation, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0,
                      class_axis: int = -1) -> torch.Tensor:
    """The loss that pulls ``student``'s outputs towards ``teacher``'s (table above; a callable is used as is).

    The logits KL is over ``class_axis`` (1 for a segmentation map), summed over every other
    position and averaged over the batch, and scaled by T**2 so its gradients keep their
    size across temperatures.
    """
    if callable(distillation):
        return distillation(student, teacher)
    if distillation == "logits":
        soft_targets = F.log_softmax(teacher / temperature, dim=class_axis)
        kl = F.kl_div(F.log_softmax(student / temperature, dim=class_axis), soft_targets, log_target=True, reduction="batchmean")
        return kl * temperature**2
    check_output_kind(distillation)
    return F.mse_loss(student, teacher)


def task_loss(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The differentiable loss of ``outputs`` against the data's ``targets`` (the curvature probes' loss; table above).

    Raises:
        MetacompressError: targets that are neither class ids nor shaped like the outputs.
    """
    dim = class_dim(outputs, targets)
    if dim is not None and kind == "logits":
        return F.cross_entropy(outputs.movedim(dim, 1), targets)
    if dim is not None and kind == "probabilities":
        return F.nll_loss(torch.log(outputs.clamp_min(1e-12)).movedim(dim, 1), targets)
    if targets.numel() != outputs.numel():
        raise MetacompressError(
            f"targets {tuple(targets.shape)} are neither class ids nor shaped like the outputs {tuple(outputs.shape)}; "
            "the curvature probes need one of the two (pass output_kind='regression' with targets shaped like the outputs)"
        )
    return F.mse_loss(outputs, targets.reshape(outputs.shape).to(outputs.dtype))

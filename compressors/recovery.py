"""Recovery after compression: calibration (BatchNorm statistics, activation ranges) and KD.

``calibrate`` is the one procedure both search mode and export mode run, so the two
modes agree: BatchNorm statistics are re-estimated with fake-quantized weights and fp
activations, then every layer's input range is calibrated at its bit-width.

``distill`` is a short knowledge-distillation fine-tune (teacher = the original model),
with weights fake-quantized through a straight-through estimator and pruned channels
held at zero, usable as a cheap step in search or as the final recovery of an export.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from metacompress.compressors.metrics import TOP1, Distillation, distillation_loss, logits, output_tensors  # noqa: F401  (re-exported)
from metacompress.compressors.quant import ActivationQuantizer, KeptValues, quantize_weight
from metacompress.errors import MetacompressError

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
KD_BATCH_SIZE = 128


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.track_running_stats]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
            m.eval()


@torch.no_grad()
def calibrate(model: nn.Module, quantizers: dict[str, ActivationQuantizer], a_bits: dict[str, int], batches: Sequence[torch.Tensor]) -> None:
    """BatchNorm recalibration, then MSE-calibrated input ranges at each layer's bits.

    Args:
        model: in eval mode, weights already (fake-)quantized.
        quantizers: layer name -> its input quantizer.
        a_bits: layer name -> activation bits for that layer's input.
        batches: calibration inputs (a slice of the train split, never search or test).
    """
    model.eval()
    for q in quantizers.values():
        q.bits.fill_(0)
    recalibrate_batchnorm(model, batches)
    budget = KeptValues()
    for q in quantizers.values():
        q.start_observing(budget)
    for x in batches:
        model(x)
    if any([q.end_observing() for q in quantizers.values()]):  # some saw too many inputs to keep: count them
        for x in batches:
            model(x)
    for name, q in quantizers.items():
        q.finish_observing(a_bits[name])


class _FakeQuantWeight(nn.Module):
    """Weight parametrization for fine-tuning: fake-quantize with a straight-through gradient."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return quantize_weight(weight, self.bits)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    w_bits: dict[str, int],
    steps: int,
    batch_size: int = KD_BATCH_SIZE,
    lr: float = 1e-3,
    temperature: float = 2.0,
    seed: int = 0,
    after_step: Callable[[], None] | None = None,
    loss: Distillation = "logits",
) -> None:
    """Fine-tune ``student`` in place to match ``teacher``'s outputs (KD, Hinton 2015, for logits).

    Quantized layers train through a straight-through fake-quantizer at their weight bits;
    activation quantizers stay in place with their calibrated ranges. Re-run
    ``calibrate`` afterwards.

    Args:
        student: the compressed model (search-mode working copy or export).
        teacher: the original model, unchanged.
        inputs: training inputs (the train split; labels are not needed).
        w_bits: layer name -> weight bits.
        steps: optimizer steps; 0 does nothing.
        after_step: called after every optimizer step; search mode re-applies its channel
            masks here so pruned slices stay exactly zero.
    """
    if steps <= 0:
        return
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    for name, bits in w_bits.items():
        parametrize.register_parametrization(student.get_submodule(name), "weight", _FakeQuantWeight(bits))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    student.train()
    try:
        for _ in range(steps):
            idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
            x = inputs[idx]
            with torch.no_grad():
                teacher_out = output_tensors(teacher(x))
            with parametrize.cached():  # quantize each weight once per step, not once per call (an RNN's per-step Linears)
                step_loss = outputs_loss(loss, output_tensors(student(x)), teacher_out, temperature)
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
    finally:
        student.eval()
        for name in w_bits:
            parametrize.remove_parametrizations(student.get_submodule(name), "weight", leave_parametrized=True)


def outputs_loss(loss: Distillation, student: list[torch.Tensor], teacher: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """The distillation loss of a model's first (scored) output plus a relative MSE per other output.

    Why: the metric, the probes and the output kind read the first output, but a multi-head
    model (a face detector's (boxes, landmarks, face probability), a (logits, embedding)
    encoder) ships every head; fine-tuning the shared trunk for the first alone let a
    pretrained MTCNN ONet's face-probability head drift to 1.3x its own mean square.
    Each other floating-point output the student computes with gradients adds
    ``mse / mean(teacher**2)``, scale-free so no head's units dominate.
    """
    total = distillation_loss(loss, student[0], teacher[0], temperature)
    for s, t in zip(student[1:], teacher[1:]):
        if s.requires_grad and s.is_floating_point() and s.shape == t.shape:
            total = total + F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8)
    return total


def steps_for_epochs(epochs: float, samples: int, batch_size: int = KD_BATCH_SIZE) -> int:
    """KD steps that show the student ``epochs`` passes' worth of ``samples`` (rounded up)."""
    if epochs < 0:
        raise MetacompressError(f"fine-tune epochs must be >= 0, got {epochs}")
    return math.ceil(epochs * samples / batch_size)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` in eval mode on (x, y) (the default ``Metric``)."""
    return TOP1.score(model, x, y, batch_size)


def batches_of(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split ``x`` into consecutive batches (the last may be smaller)."""
    return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]


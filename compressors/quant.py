"""Simulated integer quantization: per-output-channel weights, per-tensor activations, 2-8 bits.

Built on core torch ops, not on the deprecated ``torch.ao.quantization`` classes: weights
through ``torch.fake_quantize_per_channel_affine`` (their integer codes are stored, so how
they were rounded cannot differ at deployment), activations by ``fake_quantize_activation``,
which rounds ``x / scale`` as ONNX ``QuantizeLinear`` defines it. Both clipping ranges are chosen by a small
MSE search (the usual "MSE observer"): at 2-4 bits plain min/max wastes most levels on
outliers, and the proxy accuracy must reflect what a competent PTQ deployment would get.

Every statistic here is invariant to channels that a search-mode mask has zeroed: weight
rows are quantized independently, exact zeros add nothing to a row's error, and the
activation observer drops exact zeros before building its histogram. That invariance is
what makes search mode (masks) and export mode (physically pruned) agree.
"""

from __future__ import annotations

import torch
from torch import nn

CLIP_CANDIDATES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
HISTOGRAM_BINS = 2048
KEPT_VALUES = 2**28  # inputs the quantizers of one calibration keep in all while observing (1 GiB of float32)
_TINY = 1e-12


def weight_qmax(bits: int) -> int:
    """Largest code of a narrow-range symmetric ``bits``-bit integer (2 bits: -1, 0, 1)."""
    return 2 ** (bits - 1) - 1


def weight_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scales minimising each row's quantization MSE.

    Args:
        weight: (C_out, ...) float weight.
        bits: 2-8.

    Returns:
        (C_out,) positive scales; an all-zero row gets a tiny positive scale.
    """
    rows = weight.detach().reshape(weight.shape[0], -1)
    amax = rows.abs().amax(dim=1).clamp_min(_TINY)
    qmax = weight_qmax(bits)
    best_scale = amax / qmax
    best_err = torch.full_like(amax, float("inf"))
    for ratio in CLIP_CANDIDATES:
        scale = amax * ratio / qmax
        codes = torch.clamp(torch.round(rows / scale[:, None]), -qmax, qmax)
        err = ((codes * scale[:, None] - rows) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
    return best_scale


def quantize_weight(weight: torch.Tensor, bits: int, scales: torch.Tensor | None = None) -> torch.Tensor:
    """Fake-quantize ``weight`` per output channel (symmetric, narrow range) to ``bits``."""
    if scales is None:
        scales = weight_scales(weight, bits)
    qmax = weight_qmax(bits)
    zero = torch.zeros(scales.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scales.float(), zero, 0, -qmax, qmax)


def weight_codes(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (int8 storage) of a weight quantized with ``scales``."""
    qmax = weight_qmax(bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return torch.clamp(torch.round(weight / scales.reshape(shape)), -qmax, qmax).to(torch.int8)


def fake_quantize_activation(x: torch.Tensor, scale: torch.Tensor, zero_point: int, bits: int) -> torch.Tensor:
    """``(clamp(round(x / scale) + zero_point, 0, 2^bits - 1) - zero_point) * scale``, straight-through inside the range.

    Why not ``torch.fake_quantize_per_tensor_affine``: it multiplies by ``1 / scale``, which
    lands one code away from onnxruntime's ``x / scale`` for values within an ulp of a
    rounding tie. One such code early in a 4-bit InstanceNorm U-Net (MONAI's DynUNet) grew
    into a 0.6% per-pixel disagreement between the PyTorch model and its exported ONNX graph.
    Dividing makes the two agree to float rounding (and is faster on the CPU than the fused op).
    """
    low, high = -zero_point, 2**bits - 1 - zero_point
    codes = torch.round(x / scale)
    quantized = torch.clamp(codes, low, high) * scale
    if not x.requires_grad:
        return quantized
    inside = (codes >= low) & (codes <= high)  # the fused op's gradient mask: zero where the value was clipped
    return quantized + (x - x.detach()) * inside


class KeptValues:
    """How many more input values the quantizers of one calibration may keep (``KEPT_VALUES`` in all)."""

    def __init__(self) -> None:
        self.left = KEPT_VALUES


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric fake quantization of a layer's input, with an MSE-calibrated range.

    Attached to a layer as the submodule ``input_quantizer`` and run by a forward pre-hook
    (see ``attach_activation_quantizers``), so the layer's own parameters keep their names.
    States: ``observing`` keeps the non-zero inputs and their range; otherwise, when ``bits``
    is set and a range is calibrated, inputs are fake-quantized (straight-through gradient).

    Kept inputs are bounded (``KeptValues``, shared by the quantizers of one calibration): a
    ResNet-50 at 224 px sees 10 GiB of layer inputs over 256 calibration samples. A quantizer
    whose inputs pass what is left gives back what it kept and keeps only the range, and
    ``end_observing`` asks for a second pass over the same batches in which it counts the
    inputs straight into the histogram of that range: the same counts, so the same scale.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bits", torch.tensor(0, dtype=torch.int32))  # 0 = off
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.observing = False
        self._values: list[torch.Tensor] | None = []  # None: past KEPT_VALUES
        self._kept, self._low, self._high = 0, 0.0, 0.0
        self._budget = KeptValues()
        self._counts: torch.Tensor | None = None  # the second pass's histogram

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing or self._counts is not None:
            values = x.detach().flatten()
            nonzero = values != 0
            if not bool(nonzero.all()):  # compacting costs more than the check where nothing is zero (GELU, LayerNorm)
                values = values[nonzero]
            if self._counts is not None:
                self._counts += _histogram(values.cpu(), self._low, self._high)
            else:
                self._observe(values)
            return x
        bits = int(self.bits)
        if bits == 0:
            return x
        return fake_quantize_activation(x, self.scale, int(self.zero_point), bits)

    def _observe(self, values: torch.Tensor) -> None:
        if values.numel():
            low, high = torch.aminmax(values)
            self._low, self._high = min(self._low, float(low)), max(self._high, float(high))
        if self._values is not None and values.numel() > self._budget.left:
            self._budget.left += self._kept
            self._values, self._kept = None, 0
        if self._values is not None:
            self._values.append(values)
            self._kept += values.numel()
            self._budget.left -= values.numel()

    def start_observing(self, budget: KeptValues | None = None) -> None:
        """Keep inputs from now on, within ``budget`` (shared with other quantizers; default: one's own)."""
        self.observing = True
        self._values, self._kept, self._low, self._high, self._counts = [], 0, 0.0, 0.0, None
        self._budget = KeptValues() if budget is None else budget

    def end_observing(self) -> bool:
        """Stop keeping inputs; True when they passed ``KEPT_VALUES`` and the same batches must
        run again, to be counted in the range now known, before ``finish_observing``."""
        self.observing = False
        if self._values is not None:
            return False
        self._counts = torch.zeros(HISTOGRAM_BINS, dtype=torch.float64)
        return True

    def finish_observing(self, bits: int) -> None:
        """Choose the range that minimises the quantization MSE of the observed inputs."""
        self.observing = False
        counts = self._counts
        if counts is None and self._values:  # the range search on the CPU: one range on every device
            counts = _histogram(torch.cat(self._values).cpu(), self._low, self._high)
        self._values, self._counts = [], None
        self.bits.fill_(bits)
        scale, zero_point = _best_range(counts, self._low, self._high, bits)
        self.scale.fill_(scale)
        self.zero_point.fill_(zero_point)

    def extra_repr(self) -> str:
        return f"bits={int(self.bits)}, scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}"


def _histogram(values: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Counts of ``values`` in ``HISTOGRAM_BINS`` equal bins over [lo, hi] (float64; a sum over parts is the whole's)."""
    if hi - lo < _TINY:
        return torch.zeros(HISTOGRAM_BINS, dtype=torch.float64)
    return torch.histc(values, bins=HISTOGRAM_BINS, min=lo, max=hi).double()


def _best_range(counts: torch.Tensor | None, lo: float, hi: float, bits: int) -> tuple[float, int]:
    """MSE-optimal (scale, zero_point) over clipped ranges of [lo, hi] (which includes 0).

    The error is computed on the histogram of the non-zero values, so it does not depend on
    how many masked (exactly zero) channels the tensor carried.
    """
    levels = 2**bits - 1
    if counts is None or hi - lo < _TINY:
        return 1.0, 0
    width = (hi - lo) / HISTOGRAM_BINS
    centers = torch.arange(HISTOGRAM_BINS, dtype=torch.float64) * width + lo + width / 2
    best: tuple[float, float, int] | None = None
    for ratio in CLIP_CANDIDATES:
        c_lo, c_hi = lo * ratio, hi * ratio
        scale = (c_hi - c_lo) / levels
        zero_point = int(round(-c_lo / scale))
        codes = torch.clamp(torch.round(centers / scale) + zero_point, 0, levels)
        err = float((counts * ((codes - zero_point) * scale - centers) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, scale, zero_point)
    return best[1], best[2]


def _run_input_quantizer(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]),) + tuple(args[1:])


def attach_activation_quantizers(model: nn.Module, layer_names: list[str]) -> dict[str, ActivationQuantizer]:
    """Give each named layer an ``input_quantizer`` run before its forward (initially off)."""
    quantizers = {}
    for name in layer_names:
        layer = model.get_submodule(name)
        if not hasattr(layer, "input_quantizer"):
            layer.input_quantizer = ActivationQuantizer().to(layer.weight.device)
            layer.register_forward_pre_hook(_run_input_quantizer)
        quantizers[name] = layer.input_quantizer
    return quantizers

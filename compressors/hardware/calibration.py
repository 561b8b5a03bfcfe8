"""Calibration figures: each preset archetype checked against the public number it models.

``calibration_figures()`` recomputes every figure (``metacompress hardware calibrate`` prints
them); the tests in ``tests/compressors/hardware/test_hardware_calibration.py`` assert them. The
public figures come from the research notes (section 4.3): HAQ's BISMO table, APQ's
BitFusion table, HAWQ-V3's T4 latencies and HELP's FLOPs-vs-latency rank correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from metacompress.compressors.hardware.base import Hardware
from metacompress.compressors.hardware.presets import PRESETS
from metacompress.compressors.hardware.reference import mobilenetv2_layers, resnet18_layers
from metacompress.compressors.hardware.roofline import RooflineHardware
from metacompress.compressors.spec import LayerSpec


@dataclass(frozen=True)
class CalibrationFigure:
    """One computed figure and the public range it should fall in.

    Args:
        name: what is measured, e.g. ``"W8A8/W4A4 latency, compute-bound layers"``.
        hardware: the preset it is computed on.
        value: the headline number (a median, a ratio or a correlation).
        low: the lowest value the public figure allows.
        high: the highest value the public figure allows.
        detail: the spread behind the headline (min, max, count).
        source: the public figure and where it comes from.
    """

    name: str
    hardware: str
    value: float
    low: float
    high: float
    detail: str
    source: str

    @property
    def ok(self) -> bool:
        return self.low <= self.value <= self.high


def full_latency_ms(hw: Hardware, layer: LayerSpec, w_bits: int, a_bits: int) -> float:
    """Latency of the unpruned layer at the given bits."""
    return hw.layer_latency_ms(layer, layer.in_channels, layer.out_channels, w_bits, a_bits)


def bit_ratios(hw: Hardware, layers: list[LayerSpec], high: tuple[int, int], low: tuple[int, int]) -> np.ndarray:
    """Per-layer latency at ``high`` bits over latency at ``low`` bits (``(w, a)`` pairs)."""
    return np.array([full_latency_ms(hw, l, *high) / full_latency_ms(hw, l, *low) for l in layers])


def compute_bound_layers(hw: RooflineHardware, layers: list[LayerSpec], w_bits: int = 4, a_bits: int = 4) -> list[LayerSpec]:
    """Layers whose compute time exceeds both their memory time and the per-layer overhead at the bits."""
    selected = []
    for layer in layers:
        kin, kout = layer.in_channels, layer.out_channels
        compute_s = hw.effective_macs(layer, kin, kout) / (
            hw.peak_macs_per_s * hw.compute_gain(w_bits, a_bits) * hw.kind_efficiency(layer))
        memory_s = hw.dram_bytes(layer, kin, kout, w_bits, a_bits) / (hw.dram_gb_per_s * 1e9)
        if compute_s > max(memory_s, hw.overhead_s_per_sample):
            selected.append(layer)
    return selected


def _spread(values: np.ndarray) -> str:
    return f"min {values.min():.2f}, median {np.median(values):.2f}, max {values.max():.2f} over {len(values)} layers"


def memory_bound_bits_fit(hw: Hardware, layer: LayerSpec, bits: tuple[int, ...] = (8, 4, 2)) -> tuple[np.ndarray, float]:
    """Latency at each width (WbAb) relative to W8A8, and the worst deviation from ``b / 8``."""
    base = full_latency_ms(hw, layer, 8, 8)
    relative = np.array([full_latency_ms(hw, layer, b, b) / base for b in bits])
    return relative, float(np.max(np.abs(relative - np.array(bits) / 8.0)))


def flops_latency_spearman(hw: Hardware, layers: list[LayerSpec]) -> float:
    """Spearman rank correlation between MACs and W8A8 latency over ``layers``."""
    macs = [l.macs(l.in_channels, l.out_channels) for l in layers]
    latency = [full_latency_ms(hw, l, 8, 8) for l in layers]
    return float(spearmanr(macs, latency).statistic)


def calibration_figures() -> list[CalibrationFigure]:
    """Every preset calibration figure (the measured-CPU one lives in ``measure``)."""
    mbv2, r18 = mobilenetv2_layers(), resnet18_layers()
    figures = []
    for name in ("bismo-edge", "bismo-cloud"):
        hw = PRESETS[name]
        bound = bit_ratios(hw, compute_bound_layers(hw, mbv2), (8, 8), (4, 4))
        figures.append(CalibrationFigure(
            "W8A8/W4A4 latency, compute-bound MobileNetV2 layers (median)", name, float(np.median(bound)), 2.0, 4.0,
            _spread(bound) + f"; all layers: {_spread(bit_ratios(hw, mbv2, (8, 8), (4, 4)))}",
            "HAQ BISMO table: per-layer 2.00-3.98x, median 3.50x"))
    fused = PRESETS["bitfusion-asic"]
    w6 = bit_ratios(fused, mbv2 + r18, (6, 6), (8, 8))
    figures.append(CalibrationFigure("W6A6/W8A8 latency, every layer (max |ratio - 1|)", fused.name,
                                     float(np.max(np.abs(w6 - 1.0))), 0.0, 0.0, _spread(w6),
                                     "APQ BitFusion LUT: W6A6 ~ W8A8 (median 1.02); bricks fuse in powers of two"))
    r = bit_ratios(fused, mbv2, (8, 8), (4, 4))
    figures.append(CalibrationFigure("W8A8/W4A4 latency, MobileNetV2 layers (median)", fused.name, float(np.median(r)),
                                     1.5, 3.0, _spread(r), "APQ BitFusion LUT: median 2.08x, range 1.01-3.98x"))
    for high, low, public in (((8, 8), (8, 4), 1.4), ((8, 8), (4, 8), 1.6)):
        r = bit_ratios(fused, mbv2, high, low)
        figures.append(CalibrationFigure(f"W8A8/W{low[0]}A{low[1]} latency, MobileNetV2 layers (median)", fused.name,
                                         float(np.median(r)), 1.0, 2.5, _spread(r), f"APQ BitFusion LUT: ~{public}x"))
    t4 = PRESETS["t4-int4"]
    r = bit_ratios(t4, r18[1:-1], (8, 8), (4, 4))
    figures.append(CalibrationFigure("INT8/INT4 latency, ResNet-18 convs (median)", t4.name, float(np.median(r)), 1.3, 2.0,
                                     _spread(r), "HAWQ-V3 T4 (TVM): 1.32-2.03x, median 1.67x on ResNet-18"))
    mcu = PRESETS["m7-mcu"]
    pointwise = mbv2[-1]  # the 1280->1000 classifier: a batch-1 GEMV, weight traffic only
    relative, deviation = memory_bound_bits_fit(mcu, pointwise)
    figures.append(CalibrationFigure("memory-bound layer (MobileNetV2 classifier): max |lat(WbAb)/lat(W8A8) - b/8| for b in 8, 4, 2",
                                     mcu.name, deviation, 0.0, 0.1,
                                     f"{pointwise.name} relative latency at 8/4/2 bits: " + ", ".join(f"{v:.3f}" for v in relative),
                                     "roofline: bytes / bandwidth falls linearly with bits (research notes 4.1)"))
    asic = PRESETS["eyeriss-like"]
    rho = flops_latency_spearman(asic, mbv2 + r18)
    figures.append(CalibrationFigure("Spearman(FLOPs, latency) over MobileNetV2 + ResNet-18 layers", asic.name, rho,
                                     0.0, 0.9, f"{len(mbv2) + len(r18)} layers",
                                     "HELP: FLOPs Spearman 0.787 (mean over devices); 0.4-0.8 on ASIC-like targets"))
    return figures

"""Each archetype against the public figure it models (research notes section 4.3).

The same figures print with ``metacompress hardware calibrate``.
"""

from __future__ import annotations

import numpy as np
import pytest

from metacompress.compressors.hardware import PRESETS, calibration_figures
from metacompress.compressors.hardware.calibration import (
    bit_ratios,
    compute_bound_layers,
    flops_latency_spearman,
    full_latency_ms,
    memory_bound_bits_fit,
)
from metacompress.compressors.hardware.reference import make_layer, mobilenetv2_layers, resnet18_layers

MBV2, R18 = mobilenetv2_layers(), resnet18_layers()


def test_reference_networks_have_their_published_macs():
    assert sum(l.macs(l.in_channels, l.out_channels) for l in MBV2) == pytest.approx(300.8e6, rel=0.01)  # ~300 M
    assert sum(l.macs(l.in_channels, l.out_channels) for l in R18) == pytest.approx(1.814e9, rel=0.01)  # ~1.8 G
    assert len(MBV2) == 53 and len(R18) == 21


@pytest.mark.parametrize("name", ["bismo-edge", "bismo-cloud"])
def test_bit_serial_w8a8_over_w4a4_is_2_to_4x_on_compute_bound_layers(name):
    # HAQ's BISMO table: per-layer 2.00-3.98x, median 3.50x
    hw = PRESETS[name]
    bound = compute_bound_layers(hw, MBV2)
    ratios = bit_ratios(hw, bound, (8, 8), (4, 4))
    assert len(bound) >= 40
    assert ratios.min() >= 2.0 and ratios.max() <= 4.0
    assert 3.0 <= np.median(ratios) <= 3.8
    # and W8A8/W2A2 reaches beyond 4x, as HAQ's 4.0-15.6x range
    assert bit_ratios(hw, bound, (8, 8), (2, 2)).max() > 8.0


def test_brick_fused_w6a6_costs_exactly_w8a8():
    hw = PRESETS["bitfusion-asic"]
    for layer in MBV2 + R18:
        full = (layer.in_channels, layer.out_channels)
        assert hw.layer_latency_ms(layer, *full, 6, 6) == hw.layer_latency_ms(layer, *full, 8, 8)
        assert hw.layer_energy_mj(layer, *full, 6, 6) == hw.layer_energy_mj(layer, *full, 8, 8)


def test_brick_fused_w8a8_over_w4a4_matches_apq_median():
    # APQ BitFusion LUT: median 2.08x, range 1.01-3.98x
    ratios = bit_ratios(PRESETS["bitfusion-asic"], MBV2, (8, 8), (4, 4))
    assert 1.8 <= np.median(ratios) <= 2.4
    assert ratios.min() >= 1.0 and ratios.max() <= 4.0


def test_fixed_int_int4_gain_is_1_3_to_2x():
    # HAWQ-V3 on T4: INT8/INT4 per layer 1.32-2.03x, median 1.67x on ResNet-18
    ratios = bit_ratios(PRESETS["t4-int4"], R18[1:-1], (8, 8), (4, 4))
    assert ratios.min() >= 1.3 and ratios.max() <= 2.0
    assert np.median(ratios) == pytest.approx(1.67, abs=0.1)


def test_int8_only_cpu_gains_nothing_from_fewer_bits():
    hw = PRESETS["cortex-a76-int8"]
    assert np.all(bit_ratios(hw, R18, (8, 8), (2, 2)) == 1.0)


def test_memory_bound_mcu_layer_falls_linearly_with_bits():
    relative, deviation = memory_bound_bits_fit(PRESETS["m7-mcu"], MBV2[-1])  # the 1280->1000 classifier
    assert relative == pytest.approx([1.0, 0.5, 0.25], abs=0.01)
    assert deviation < 0.01
    # a layer that streams 1 MB of weights once: weight-bound on every width
    big_linear = make_layer("fc", "linear", 1024, 1024)
    _, deviation = memory_bound_bits_fit(PRESETS["m7-mcu"], big_linear)
    assert deviation < 0.01


def test_flops_rank_latency_poorly_on_an_asic():
    # HELP: FLOPs Spearman 0.787 on average; ASIC-like targets 0.4-0.8
    rho = flops_latency_spearman(PRESETS["eyeriss-like"], MBV2 + R18)
    assert 0.4 < rho < 0.9
    assert rho == pytest.approx(0.655, abs=0.01)


def test_flops_rank_latency_well_on_a_compute_bound_target():
    # the contrast that makes the ASIC figure meaningful: without memory limits FLOPs rank latency well
    rho = flops_latency_spearman(PRESETS["bismo-cloud"], [l for l in R18 if l.kind == "conv"])
    assert rho > 0.9


def test_calibration_report_is_all_in_range():
    figures = calibration_figures()
    assert len(figures) == 9
    assert [f.hardware for f in figures if not f.ok] == []
    assert full_latency_ms(PRESETS["t4-int4"], R18[0], 8, 8) > 0

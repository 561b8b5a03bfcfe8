"""This machine's CPU: real pruned layers timed into a lookup table that prices every layer."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch

from metacompress.compressors.cost import total_cost
from metacompress.compressors.hardware import (
    EMBEDDING_DIM,
    PRESETS,
    export_lut,
    hardware_embedding,
    measure_cpu,
    measured_rank_correlation,
)
from metacompress.compressors.hardware.measure import (
    TinyResNet,
    build_torch_layer,
    random_kept,
    tiny_resnet_spec,
    time_layer_ms,
)
from metacompress.compressors.hardware.reference import make_layer, mobilenetv2_layers
from metacompress.compressors.spec import LayerSpec


def test_measured_table_prices_every_layer_of_every_plan(tmp_path):
    spec = tiny_resnet_spec()
    start = time.perf_counter()
    cpu = measure_cpu(spec, tmp_path / "cpu.csv", fractions=(0.5, 1.0), repeats=2, warmup=1, min_repeat_ms=0.05)
    assert time.perf_counter() - start < 10.0
    assert cpu.archetype == "measured" and cpu.supported_bits == (8,) and not cpu.has_energy
    rng = np.random.default_rng(0)
    for _ in range(20):
        kept = random_kept(spec, rng, max_prune=0.9)
        for bits in (2, 5, 8):
            w = [8 if u.frozen else bits for u in spec.units]
            latency_ms = total_cost(spec, "latency", kept, w, w, cpu)
            assert np.isfinite(latency_ms) and latency_ms > 0
    full = [8] * len(spec.units)
    assert total_cost(spec, "latency", spec.full_kept, [2] * 6, [2] * 6, cpu) == total_cost(spec, "latency", spec.full_kept, full, full, cpu)
    vector = hardware_embedding(cpu)
    assert vector.shape == (EMBEDDING_DIM,) and np.all(np.isfinite(vector)) and np.abs(vector).max() <= 1.0


def test_pruned_layers_are_physically_smaller_and_reproduce_the_spec():
    layers = mobilenetv2_layers()[:6] + [make_layer("fc", "linear", 64, 10), make_layer("tok", "linear", 32, 48, tokens=7)]
    for layer in layers:
        kin, kout = max(1, layer.in_channels // 2), max(1, layer.out_channels // 2)
        if layer.kind == "depthwise":
            kin = kout
        module, x = build_torch_layer(layer, kin, kout)
        with torch.inference_mode():
            y = module(x)
        assert sum(p.numel() for n, p in module.named_parameters() if n == "weight") == layer.weight_count(kin, kout)
        assert y.numel() == layer.output_elems(kout)
        assert x.numel() == layer.input_elems(kin)


def test_conv1d_layers_are_measured_as_conv1d():
    layer = LayerSpec("c1", "conv", 4, 6, (5,), 1, 1, 40, 40, True, 0, in_fixed=4)
    module, x = build_torch_layer(layer, 2, 3)
    assert isinstance(module, torch.nn.Conv1d) and module(x).shape == (1, 3, 40)


def test_3d_and_transposed_convs_are_measured_as_what_they_are_at_the_spec_shape():
    factored = LayerSpec("c3", "conv", 4, 6, (1, 3, 3), 1, 1, 4 * 8 * 8, 4 * 8 * 8, False, 0, in_fixed=4)  # R(2+1)D's spatial conv
    module, x = build_torch_layer(factored, 2, 3)
    assert isinstance(module, torch.nn.Conv3d) and module(x).shape[2:].numel() == 4 * 8 * 8
    up = LayerSpec("up", "conv", 8, 4, (2, 2), 2, 1, 16, 64, True, 0, in_fixed=8, transposed=True)  # a U-Net's 2x upsampling
    module, x = build_torch_layer(up, 8, 2)
    assert isinstance(module, torch.nn.ConvTranspose2d) and module(x).shape == (1, 2, 8, 8)


def test_timing_is_a_positive_median():
    module, x = build_torch_layer(make_layer("c", "conv", 8, 8, 3, 1, 8), 8, 8)
    assert 0 < time_layer_ms(module, x, repeats=3, warmup=1, min_repeat_ms=0.05) < 100


def test_rank_correlation_is_one_against_itself(tmp_path):
    spec = tiny_resnet_spec()
    hw = PRESETS["cortex-a76-int8"]
    lut = export_lut(hw, spec.layers, tmp_path / "a76.csv", kept_fractions=(0.25, 0.5, 0.75, 1.0))
    from metacompress.compressors.hardware import LookupTableHardware

    rho, predicted, measured = measured_rank_correlation(spec, LookupTableHardware.from_csv(lut), hw, n_plans=50, seed=1)
    assert len(predicted) == 50 and rho > 0.99  # interpolating the preset's own grid keeps its ranking
    again, _, _ = measured_rank_correlation(spec, LookupTableHardware.from_csv(lut), hw, n_plans=50, seed=1)
    assert again == rho


def test_rank_correlation_is_nan_without_a_warning_when_every_plan_costs_the_same():
    hw = PRESETS["cortex-a76-int8"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning would fail here
        rho, predicted, _ = measured_rank_correlation(tiny_resnet_spec(), hw, hw, n_plans=5, seed=0, max_prune=0.0)
    assert math.isnan(rho) and np.ptp(predicted) == 0


def test_hand_written_spec_matches_analyze():
    graph = pytest.importorskip("metacompress.compressors.graph")
    traced = graph.analyze(TinyResNet().eval(), torch.randn(1, 3, 32, 32))
    assert traced.fingerprint == tiny_resnet_spec().fingerprint
    assert traced.layers == tiny_resnet_spec().layers


def test_bad_measure_settings_are_all_reported_before_timing():
    from metacompress.compressors.hardware import measure_layers
    from metacompress.errors import HardwareError

    with pytest.raises(HardwareError, match=r"kept fractions \(0.0, 1.0\) must be in.*repeats 0 must be >= 1.*threads 0 must be"):
        measure_layers(tiny_resnet_spec().layers, fractions=(0.0, 1.0), repeats=0, threads=0)

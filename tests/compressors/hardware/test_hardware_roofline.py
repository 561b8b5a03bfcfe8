"""The roofline family: the law on a hand-worked layer, validation, bits, samplers, monotonicity."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metacompress.compressors.hardware import ARCHETYPES, PRESETS, RooflineHardware, sample_hardware
from metacompress.compressors.hardware.reference import make_layer, mobilenetv2_layers, resnet18_layers
from metacompress.compressors.hardware.embedding import PROBE_LAYERS
from metacompress.compressors.hardware.roofline import EFFICIENCY_RANGES, SAMPLE_RANGES, with_params
from metacompress.errors import HardwareError

LAYERS = mobilenetv2_layers() + resnet18_layers() + list(PROBE_LAYERS)


def simple(**changes) -> RooflineHardware:
    params = dict(name="toy", archetype="fixed-int", peak_macs_per_s=1e9, dram_gb_per_s=1.0, buffer_bytes=1 << 20,
                  supported_bits=(8,), overhead_us=0.0, e_mac_pj=0.25, e_dram_pj_per_byte=160.0)
    params.update(changes)
    return RooflineHardware(**params)


def test_hand_worked_conv3x3():
    # conv 16->16, 3x3, 8x8 map: MACs = 64 positions * 16 out * 9 * 16 in = 147456
    layer = make_layer("c", "conv", 16, 16, 3, 1, 8)
    hw = simple()
    assert layer.macs(16, 16) == 147456
    # compute 147456 / 1e9 s = 0.147456 ms; weights 2304 B / 1 GB/s = 2.3 us; activations fit the 1 MB buffer
    assert hw.layer_latency_ms(layer, 16, 16, 8, 8) == pytest.approx(0.147456, rel=1e-12)
    # energy: 147456 MACs * 0.25 pJ + 2304 B * 160 pJ = 405504 pJ
    assert hw.layer_energy_mj(layer, 16, 16, 8, 8) == pytest.approx(405504e-9, rel=1e-12)


def test_memory_bound_layer_spills_only_the_overflow():
    layer = make_layer("c", "conv", 16, 16, 3, 1, 8)  # 1024 + 1024 activation elements
    hw = simple(buffer_bytes=1536, peak_macs_per_s=1e15)
    # weights 2304 B + (2048 - 1536) spilled activation elements at 1 byte = 2816 B at 1 GB/s
    assert hw.dram_bytes(layer, 16, 16, 8, 8) == pytest.approx(2816.0)
    assert hw.layer_latency_ms(layer, 16, 16, 8, 8) == pytest.approx(2816e-6, rel=1e-6)


def test_overhead_is_added_per_layer():
    layer = make_layer("c", "conv", 16, 16, 3, 1, 8)
    assert simple(overhead_us=10.0).layer_latency_ms(layer, 16, 16, 8, 8) == pytest.approx(0.157456)


@pytest.mark.parametrize("name, bits, executed", [
    ("bitfusion-asic", 6, 8), ("bitfusion-asic", 3, 4), ("bitfusion-asic", 2, 2),
    ("bismo-edge", 5, 5), ("cortex-a76-int8", 2, 8), ("t4-int4", 3, 4), ("t4-int4", 5, 8), ("m7-mcu", 7, 8),
])
def test_executed_bits_round_up(name, bits, executed):
    assert PRESETS[name].executed_bits(bits) == executed


@pytest.mark.parametrize("bits", [1, 9, 4.5, True])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(HardwareError, match="outside 2-8"):
        PRESETS["bismo-edge"].executed_bits(bits)


def test_invalid_parameters_are_all_reported_at_once():
    with pytest.raises(HardwareError, match="dram_gb_per_s=-1.0 must be a positive.*depthwise_efficiency=0 must be in"):
        simple(dram_gb_per_s=-1.0, depthwise_efficiency=0)


@pytest.mark.parametrize("changes, message", [
    (dict(supported_bits=(4,)), "must be a subset of .* that contains 8"),
    (dict(supported_bits=(2, 8)), "runs int8 and optionally int4"),
    (dict(archetype="brick-fused", supported_bits=(6, 8)), "powers of two"),
    (dict(archetype="quantum"), "archetype 'quantum' is unknown"),
    (dict(archetype="sparse"), "needs sparse_efficiency > 0"),
    (dict(int4_speedup=2.5), "int4_speedup=2.5 must be in"),
])
def test_invalid_hardware_names_the_problem(changes, message):
    with pytest.raises(HardwareError, match=message):
        simple(**changes)


def test_describe_is_json_and_complete():
    for hw in PRESETS.values():
        data = json.loads(json.dumps(hw.describe()))
        assert data["peak_macs_per_s"] == hw.peak_macs_per_s and data["supported_bits"] == list(hw.supported_bits)
        assert data["notes"], f"{hw.name} lacks its calibration note"


def test_sparse_target_rewards_pruning_beyond_the_shape():
    sparse = PRESETS["ampere-sparse"]
    dense = with_params(sparse, archetype="fixed-int", sparse_efficiency=0.0)
    layer = make_layer("c", "conv", 256, 256, 3, 1, 56)  # compute-bound on both
    full = sparse.effective_macs(layer, 256, 256)
    half = sparse.effective_macs(layer, 256, 128)
    assert half / full == pytest.approx(0.5 * (1 - 0.5 * 0.5))  # macs x (1 - eta * pruned fraction)
    speedup_sparse = sparse.layer_latency_ms(layer, 256, 256, 8, 8) / sparse.layer_latency_ms(layer, 256, 128, 8, 8)
    speedup_dense = dense.layer_latency_ms(layer, 256, 256, 8, 8) / dense.layer_latency_ms(layer, 256, 128, 8, 8)
    assert speedup_dense < 2.0 < speedup_sparse


@settings(max_examples=200, deadline=None)
@given(archetype=st.sampled_from(ARCHETYPES), seed=st.integers(0, 2**32 - 1))
def test_sampled_hardware_is_deterministic_and_valid(archetype, seed):
    hw = sample_hardware(archetype, seed)
    assert hw == sample_hardware(archetype, seed)
    assert hw.archetype == archetype and 8 in hw.supported_bits
    for key, (low, high) in SAMPLE_RANGES[archetype].items():
        assert low * (1 - 1e-9) - 1 <= getattr(hw, key) <= high * (1 + 1e-9)  # buffer bytes are truncated to int
    assert EFFICIENCY_RANGES["depthwise_efficiency"][0] <= hw.depthwise_efficiency <= EFFICIENCY_RANGES["depthwise_efficiency"][1]
    assert hw.supports_sparsity == (archetype == "sparse")
    layer = LAYERS[seed % len(LAYERS)]
    for bits in (2, 5, 8):
        latency = hw.layer_latency_ms(layer, layer.in_channels, layer.out_channels, bits, bits)
        energy = hw.layer_energy_mj(layer, layer.in_channels, layer.out_channels, bits, bits)
        assert math.isfinite(latency) and latency > 0 and math.isfinite(energy) and energy > 0


def test_different_seeds_give_diverse_targets():
    peaks = {sample_hardware("fixed-int", seed).peak_macs_per_s for seed in range(20)}
    assert len(peaks) == 20 and max(peaks) / min(peaks) > 100  # log-uniform over 1e10-1e14


def test_sampler_accepts_a_generator_and_refuses_unknown_archetypes():
    import numpy as np

    rng = np.random.default_rng(3)
    first, second = sample_hardware("mcu", rng), sample_hardware("mcu", rng)
    assert first != second and first.name == "mcu-sampled"
    with pytest.raises(HardwareError, match="archetype 'tpu' is unknown; use one of bit-serial"):
        sample_hardware("tpu", 0)


HARDWARE = st.one_of(st.sampled_from(list(PRESETS.values())),
                     st.builds(sample_hardware, st.sampled_from(ARCHETYPES), st.integers(0, 10**6)))


@settings(max_examples=300, deadline=None)
@given(hw=HARDWARE, index=st.integers(0, len(LAYERS) - 1), data=st.data())
def test_costs_are_monotone_in_kept_channels_and_bits(hw, index, data):
    layer = LAYERS[index]
    kin = data.draw(st.integers(1, layer.in_channels), label="kept_in")
    kout = data.draw(st.integers(1, layer.out_channels), label="kept_out")
    if layer.kind == "depthwise":
        kin = kout
    w, a = data.draw(st.integers(2, 8), label="w"), data.draw(st.integers(2, 8), label="a")
    more_out = data.draw(st.integers(kout, layer.out_channels), label="more_out")
    more_in = more_out if layer.kind == "depthwise" else data.draw(st.integers(kin, layer.in_channels), label="more_in")
    more_w, more_a = data.draw(st.integers(w, 8), label="more_w"), data.draw(st.integers(a, 8), label="more_a")
    for price in (hw.layer_latency_ms, hw.layer_energy_mj):
        base = price(layer, kin, kout, w, a)
        assert price(layer, more_in, kout if layer.kind != "depthwise" else more_out, w, a) >= base * (1 - 1e-12)
        assert price(layer, kin if layer.kind != "depthwise" else more_in, more_out, w, a) >= base * (1 - 1e-12)
        assert price(layer, kin, kout, more_w, a) >= base * (1 - 1e-12)
        assert price(layer, kin, kout, w, more_a) >= base * (1 - 1e-12)

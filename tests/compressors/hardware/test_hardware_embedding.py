"""The HELP-style hardware embedding: fixed length, finite, bounded and comparable across targets."""

from __future__ import annotations

import numpy as np
import pytest

from metacompress.compressors.hardware import (
    ARCHETYPES,
    EMBEDDING_DIM,
    PRESETS,
    PROBE_LAYERS,
    LookupTableHardware,
    embedding_feature_names,
    export_lut,
    hardware_embedding,
    sample_hardware,
)
from metacompress.compressors.hardware.embedding import PROBE_BITS
from metacompress.compressors.hardware.reference import make_layer
from metacompress.errors import HardwareError


def check(vector: np.ndarray) -> None:
    assert vector.shape == (EMBEDDING_DIM,) and vector.dtype == np.float32
    assert np.all(np.isfinite(vector))
    assert vector.min() >= -1.0 and vector.max() <= 1.0


def test_layout_matches_the_documented_table():
    assert EMBEDDING_DIM == 90 == len(embedding_feature_names()) and len(PROBE_LAYERS) == 10
    assert embedding_feature_names()[80:] == [f"supports_{b}bit" for b in range(2, 9)] + ["sparse", "has_energy", "log10_total_probe_ms"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_embeds_finite_and_bounded(name):
    vector = hardware_embedding(PRESETS[name])
    check(vector)
    assert vector[80 + 6] == 1.0  # 8-bit always supported
    assert vector[87] == float(PRESETS[name].supports_sparsity)


@pytest.mark.parametrize("archetype", ARCHETYPES)
def test_sampled_targets_embed_finite_and_bounded(archetype):
    for seed in range(10):
        check(hardware_embedding(sample_hardware(archetype, seed)))


def test_bits_show_in_the_embedding_as_the_hardware_runs_them():
    names = embedding_feature_names()
    fused = hardware_embedding(PRESETS["bitfusion-asic"])
    cpu = hardware_embedding(PRESETS["cortex-a76-int8"])
    w4a4 = [i for i, n in enumerate(names) if n.startswith("lat_W4A4")]
    assert np.all(cpu[w4a4] == 0.0)  # int8 only: 4-bit costs what 8-bit does
    assert fused[names.index("lat_W4A4/W8A8:probe1.conv3x3.mid")] == pytest.approx(np.log2(1 / 3.47) / 8, abs=0.01)


def test_distinct_archetypes_embed_apart_and_similar_targets_close():
    def distance(a, b):
        return float(np.linalg.norm(hardware_embedding(PRESETS[a]) - hardware_embedding(PRESETS[b])))

    assert distance("cortex-a76-int8", "raspi4-a72") < 0.5  # two int8 CPUs
    assert distance("bismo-edge", "bitfusion-asic") > 1.0
    assert distance("bitfusion-asic", "t4-int4") > 1.0


def test_a_lookup_table_of_a_preset_embeds_as_the_preset(tmp_path):
    hw = PRESETS["bitfusion-asic"]  # supports 2/4/8, exactly the widths exported
    pairs = ((8, 8),) + PROBE_BITS + ((2, 2), (2, 4), (2, 8), (4, 2), (8, 2))
    path = export_lut(hw, PROBE_LAYERS, tmp_path / "probes.csv", kept_fractions=(0.5, 1.0), bit_pairs=tuple(dict.fromkeys(pairs)))
    lut = LookupTableHardware.from_csv(path)
    check(hardware_embedding(lut))
    np.testing.assert_allclose(hardware_embedding(lut), hardware_embedding(hw), atol=1e-6)


def test_a_table_without_probe_rows_says_what_is_missing(tmp_path):
    layer = make_layer("conv", "conv", 8, 8, 3, 1, 4)
    lut = LookupTableHardware.from_csv(export_lut(PRESETS["t4-int4"], [layer], tmp_path / "t.csv"))
    with pytest.raises(HardwareError, match="cannot price layer 'probe0.conv3x3.bigmap'"):
        hardware_embedding(lut)


def test_embedding_is_cached_and_read_only():
    first = hardware_embedding(PRESETS["m7-mcu"])
    assert hardware_embedding(PRESETS["m7-mcu"]) is first
    with pytest.raises(ValueError):
        first[0] = 1.0

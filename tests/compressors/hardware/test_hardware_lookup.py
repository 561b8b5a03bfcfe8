"""Lookup-table hardware: CSV round trip, interpolation, bit rounding and clear errors."""

from __future__ import annotations

import csv
import logging

import pytest

from metacompress.compressors.hardware import PRESETS, LookupTableHardware, export_lut, get_hardware
from metacompress.compressors.hardware.lookup import CSV_COLUMNS, lut_row, write_lut_csv
from metacompress.compressors.hardware.reference import make_layer, mobilenetv2_layers
from metacompress.errors import HardwareError

CONV = make_layer("conv", "conv", 8, 8, 3, 1, 4)
DW = make_layer("dw", "depthwise", 8, 8, 3, 1, 4)
BIT_PAIRS = ((8, 8), (4, 4), (2, 2), (8, 4), (4, 8), (2, 8), (8, 2), (4, 2), (2, 4))


def synthetic_rows(layer, pairs=((8, 8),), energy=True, latency=lambda kin, kout, w, a: kin * kout * w * a / 64.0):
    rows = []
    for w, a in pairs:
        for kin in ((2, 4, 8) if layer.kind != "depthwise" else (None,)):
            for kout in (2, 4, 8):
                kin_ = kout if kin is None else kin
                value = latency(kin_, kout, w, a)
                rows.append(lut_row(layer, kin_, kout, w, a, value, value / 10 if energy else None))
    return rows


def test_round_trip_gives_the_same_prices(tmp_path):
    layers = mobilenetv2_layers()[:12]
    hw = PRESETS["bitfusion-asic"]
    path = export_lut(hw, layers, tmp_path / "bf.csv", kept_fractions=(0.25, 0.5, 1.0), bit_pairs=BIT_PAIRS)
    lut = get_hardware(str(path))
    assert lut.supported_bits == (2, 4, 8) and lut.has_energy
    for layer in layers:
        for kin, kout in ((layer.in_channels, layer.out_channels), (layer.in_channels // 2, layer.out_channels // 4)):
            if layer.kind == "depthwise":
                kin = kout
            for w, a in ((8, 8), (6, 6), (4, 4), (3, 5), (2, 2)):
                assert lut.layer_latency_ms(layer, kin, kout, w, a) == pytest.approx(hw.layer_latency_ms(layer, kin, kout, w, a), rel=1e-12)
                assert lut.layer_energy_mj(layer, kin, kout, w, a) == pytest.approx(hw.layer_energy_mj(layer, kin, kout, w, a), rel=1e-12)


def test_csv_has_the_documented_columns(tmp_path):
    path = write_lut_csv(tmp_path / "t.csv", synthetic_rows(CONV))
    with path.open() as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == ("name",) + CSV_COLUMNS


def test_bilinear_interpolation_between_measured_counts(tmp_path):
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", synthetic_rows(CONV)))
    # latency = kin * kout is bilinear, so interpolating a 2/4/8 grid reproduces it exactly
    assert lut.layer_latency_ms(CONV, 6, 3, 8, 8) == pytest.approx(18.0)
    assert lut.layer_latency_ms(CONV, 3, 5, 8, 8) == pytest.approx(15.0)
    dw = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "dw.csv", synthetic_rows(DW)))
    # depthwise interpolates in kept_out alone: halfway between 16 (at 4) and 64 (at 8)
    assert dw.layer_latency_ms(DW, 6, 6, 8, 8) == pytest.approx(40.0)


def test_bits_round_up_to_the_measured_widths(tmp_path):
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", synthetic_rows(CONV, pairs=((8, 8), (4, 4)))))
    assert lut.supported_bits == (4, 8)
    assert lut.layer_latency_ms(CONV, 8, 8, 6, 6) == lut.layer_latency_ms(CONV, 8, 8, 8, 8) == 64.0
    assert lut.layer_latency_ms(CONV, 8, 8, 3, 3) == lut.layer_latency_ms(CONV, 8, 8, 4, 4) == 16.0
    with pytest.raises(HardwareError, match=r"no W4A8 rows for layer 'conv'.*measured: W4A4, W8A8"):
        lut.layer_latency_ms(CONV, 8, 8, 4, 8)


def test_unknown_shape_names_the_layer_and_its_shape(tmp_path):
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", synthetic_rows(CONV)))
    other = make_layer("layer3.0.conv1", "conv", 8, 16, 3, 1, 4)
    with pytest.raises(HardwareError, match=r"cannot price layer 'layer3.0.conv1' \(conv 8->16, kernel 3x3.*no rows with this shape"):
        lut.layer_latency_ms(other, 8, 16, 8, 8)


def test_missing_energy_errors_only_when_energy_is_asked(tmp_path):
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", synthetic_rows(CONV, energy=False)))
    assert not lut.has_energy
    assert lut.layer_latency_ms(CONV, 8, 8, 8, 8) == 64.0
    with pytest.raises(HardwareError, match="no energy_mj for layer 'conv'; use a latency, size or bitops budget"):
        lut.layer_energy_mj(CONV, 8, 8, 8, 8)


def test_shapes_beyond_the_table_are_refused_and_below_it_clamped(tmp_path, caplog):
    rows = [r for r in synthetic_rows(CONV) if int(r["kept_out"]) <= 4 and int(r["kept_in"]) <= 4]
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", rows))
    with pytest.raises(HardwareError, match="up to kept_in=4, kept_out=4, not 8, 8; add rows for the larger shape"):
        lut.layer_latency_ms(CONV, 8, 8, 8, 8)
    with caplog.at_level(logging.WARNING):
        assert lut.layer_latency_ms(CONV, 1, 1, 8, 8) == lut.layer_latency_ms(CONV, 2, 2, 8, 8) == 4.0
    assert "below the smallest measured shape" in caplog.text


def test_a_measured_dip_is_lifted_to_keep_costs_monotone(tmp_path):
    noisy = synthetic_rows(CONV, latency=lambda kin, kout, w, a: 5.0 if (kin, kout) == (4, 4) else kin * kout)
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "t.csv", noisy))
    assert lut.layer_latency_ms(CONV, 4, 4, 8, 8) == 8.0  # the running max over (2, 4) and (4, 2)
    assert lut.layer_latency_ms(CONV, 4, 8, 8, 8) == 32.0
    # and in bits: a narrower pair measured dearer than a wider one is never undercut
    bits_noisy = synthetic_rows(CONV, pairs=((8, 8), (4, 4)), latency=lambda kin, kout, w, a: 2.0 if w == 8 else 3.0)
    lut = LookupTableHardware.from_csv(write_lut_csv(tmp_path / "b.csv", bits_noisy))
    assert lut.layer_latency_ms(CONV, 8, 8, 8, 8) == 3.0


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "latency_ms"} for r in rows], "lacks columns \\['latency_ms'\\]"),
    (lambda rows: rows + rows[:1], "duplicate measurement"),
    (lambda rows: rows[1:], "kept grid of conv 8->8.*is incomplete"),
    (lambda rows: [dict(r, w_bits=4, a_bits=4) for r in rows], "no W8A8 rows"),
    (lambda rows: [dict(r, kind="conv3d") for r in rows], "data row 1: kind 'conv3d' is not one of"),
    (lambda rows: [dict(r, latency_ms="-1") for r in rows], "latency_ms -1.0 must be a positive number"),
    (lambda rows: [dict(r, kept_out=99) for r in rows], "kept_out 99 must be in"),
])
def test_bad_tables_are_refused_with_the_fix(tmp_path, mutate, message):
    rows = mutate(synthetic_rows(CONV))
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(HardwareError, match=message):
        LookupTableHardware.from_csv(path)


def test_get_hardware_resolves_tables_and_refuses_unknown_names(tmp_path):
    path = write_lut_csv(tmp_path / "board.csv", synthetic_rows(CONV))
    assert get_hardware(str(path)).name == "board"
    measured = get_hardware(f"measured:{path}")
    assert measured.name == "measured:board.csv" and measured.archetype == "measured"
    with pytest.raises(HardwareError, match="hardware 'tpu-v9' is unknown; use a preset \\(bismo-edge, bismo-cloud"):
        get_hardware("tpu-v9")
    with pytest.raises(HardwareError, match="does not exist; write one with `metacompress hardware measure"):
        get_hardware(str(tmp_path / "missing.csv"))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(kin=st.integers(1, 8), kout=st.integers(1, 8), w=st.integers(2, 8), a=st.integers(2, 8),
       more=st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 6), st.integers(0, 6)))
def test_table_prices_are_monotone(tmp_path_factory, kin, kout, w, a, more):
    path = tmp_path_factory.getbasetemp() / "monotone.csv"
    if not path.exists():
        write_lut_csv(path, synthetic_rows(CONV, pairs=BIT_PAIRS,
                                           latency=lambda i, o, wb, ab: 1.0 + (i * o) ** 0.7 * (wb + ab)))
    lut = LookupTableHardware.from_csv(path)
    kin2, kout2 = min(8, kin + more[0]), min(8, kout + more[1])
    w2, a2 = min(8, w + more[2]), min(8, a + more[3])
    assert lut.layer_latency_ms(CONV, kin2, kout2, w2, a2) >= lut.layer_latency_ms(CONV, kin, kout, w, a)

"""Lookup-table hardware: per-layer costs a user measured on their own target, from a CSV.

CSV format (one row per measured layer shape and bit-width pair; header required, any
column order, extra columns such as ``name`` are ignored):

================  ==========================================================================
column            meaning
================  ==========================================================================
kind              ``conv``, ``depthwise`` or ``linear``
in_channels       input channels (linear: in_features) of the *unpruned* layer
out_channels      output channels (linear: out_features) of the unpruned layer
kernel            kernel extent, ``3x3`` (Conv2d), ``5`` (Conv1d), empty for linear
stride            first stride (1 for linear)
groups            convolution groups of the unpruned layer (depthwise: = in_channels)
in_positions      input spatial positions per channel (H*W; tokens for linear; 1 if flat)
out_positions     output spatial positions per channel
kept_in           input channels kept in this measurement (depthwise: = kept_out)
kept_out          output channels kept in this measurement
w_bits            weight bits the layer ran at (2-8)
a_bits            activation bits the layer ran at (2-8)
latency_ms        measured latency of one sample (batch 1), milliseconds
energy_mj         optional: measured energy of one sample, millijoules (empty if unknown)
================  ==========================================================================

The first eight columns are the layer's *signature* and match ``LayerSpec`` fields. How a
layer is priced:

- Signature: must be in the table, else ``HardwareError`` naming the layer and its shape.
- Bits: the table's supported widths are those it measured (8 is required). A requested
  width is rounded up to the nearest measured one, as real hardware executes it; the
  rounded ``(w, a)`` pair must have been measured for that signature.
- Kept channels: bilinear interpolation over the measured ``kept_in x kept_out`` grid
  (which must be complete); depthwise layers interpolate in ``kept_out`` alone. Below the
  smallest measured count the smallest is used (conservative; a warning is logged once per
  layer); above the largest measured count is an error.
- Monotone envelope: the table is made non-decreasing in kept channels and bits (running
  maximum), since the budget projection relies on monotone costs; a measured dip is noise.
- Energy: only needed by energy budgets; a table without it errors only when asked.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from metacompress.compressors.hardware.base import Hardware, check_supported_bits
from metacompress.compressors.spec import LAYER_KINDS, LayerSpec
from metacompress.errors import HardwareError

log = logging.getLogger(__name__)

SIGNATURE_COLUMNS = ("kind", "in_channels", "out_channels", "kernel", "stride", "groups", "in_positions", "out_positions")
REQUIRED_COLUMNS = SIGNATURE_COLUMNS + ("kept_in", "kept_out", "w_bits", "a_bits", "latency_ms")
CSV_COLUMNS = REQUIRED_COLUMNS + ("energy_mj",)

Signature = tuple  # (kind, in_channels, out_channels, kernel tuple, stride, groups, in_positions, out_positions)


def layer_signature(layer: LayerSpec) -> Signature:
    """The table key of a layer: its unpruned shape (the kept counts and bits index within it)."""
    return (layer.kind, layer.in_channels, layer.out_channels, tuple(layer.kernel_size), layer.stride, layer.groups,
            layer.in_positions, layer.out_positions)


def describe_signature(sig: Signature) -> str:
    kind, cin, cout, kernel, stride, groups, pin, pout = sig
    k = "x".join(map(str, kernel)) or "-"
    return f"{kind} {cin}->{cout}, kernel {k}, stride {stride}, groups {groups}, positions {pin}->{pout}"


def format_kernel(kernel: tuple[int, ...]) -> str:
    return "x".join(str(k) for k in kernel)


def lut_row(layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int, latency_ms: float,
            energy_mj: float | None = None, name: str = "") -> dict:
    """One CSV row (a dict keyed by ``CSV_COLUMNS`` plus ``name``) for a measured layer."""
    return {"name": name or layer.name, "kind": layer.kind, "in_channels": layer.in_channels,
            "out_channels": layer.out_channels, "kernel": format_kernel(layer.kernel_size), "stride": layer.stride,
            "groups": layer.groups, "in_positions": layer.in_positions, "out_positions": layer.out_positions,
            "kept_in": kept_in, "kept_out": kept_out, "w_bits": w_bits, "a_bits": a_bits,
            "latency_ms": repr(float(latency_ms)), "energy_mj": "" if energy_mj is None else repr(float(energy_mj))}


def write_lut_csv(path: str | Path, rows: Iterable[dict], extra_columns: tuple[str, ...] = ()) -> Path:
    """Write rows made by ``lut_row`` to ``path`` atomically, in the documented format.

    ``extra_columns`` (e.g. ``fp32_latency_ms``) are written after the format's columns;
    readers ignore them, so they are a record for people, not a cost.
    """
    import io

    from metacompress.compressors.io import write_text_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=("name",) + CSV_COLUMNS + tuple(extra_columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)


def export_lut(hardware: Hardware, layers: Iterable[LayerSpec], path: str | Path,
               kept_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
               bit_pairs: tuple[tuple[int, int], ...] = ((8, 8),)) -> Path:
    """Price ``layers`` on ``hardware`` over a grid and write them as a lookup table.

    Useful to freeze a model of a target into the CSV format, and to test round trips.
    """
    rows, seen = [], set()
    for layer in layers:
        if layer_signature(layer) in seen:
            continue
        seen.add(layer_signature(layer))
        for w, a in bit_pairs:
            for kin, kout in kept_grid(layer, kept_fractions):
                energy = hardware.layer_energy_mj(layer, kin, kout, w, a) if hardware.has_energy else None
                rows.append(lut_row(layer, kin, kout, w, a, hardware.layer_latency_ms(layer, kin, kout, w, a), energy))
    return write_lut_csv(path, rows)


def kept_grid(layer: LayerSpec, fractions: tuple[float, ...]) -> list[tuple[int, int]]:
    """The ``(kept_in, kept_out)`` shapes to measure: fractions of each side (depthwise: the diagonal).

    Counts are whole multiples of the groups of a grouped conv, and at least one.
    """
    def counts(total: int, step: int) -> list[int]:
        return sorted({max(step, round(f * total / step) * step) for f in fractions})

    outs = counts(layer.out_channels, layer.groups if layer.kind == "conv" else 1)
    if layer.kind == "depthwise":
        return [(k, k) for k in outs]
    ins = counts(layer.in_channels, layer.groups if layer.kind == "conv" else 1)
    return [(kin, kout) for kin in ins for kout in outs]


class _Grid:
    """Measured costs of one signature at one bit pair over a kept_in x kept_out grid."""

    def __init__(self, kept_in: np.ndarray, kept_out: np.ndarray, latency: np.ndarray, energy: np.ndarray):
        self.kept_in, self.kept_out = kept_in, kept_out
        self.latency = np.maximum.accumulate(np.maximum.accumulate(latency, axis=0), axis=1)
        self.energy = np.maximum.accumulate(np.maximum.accumulate(energy, axis=0), axis=1)

    def price(self, table: np.ndarray, kept_in: int, kept_out: int) -> float:
        i0, i1, ti = _bracket(self.kept_in, kept_in)
        j0, j1, tj = _bracket(self.kept_out, kept_out)
        top = table[i0, j0] * (1 - tj) + table[i0, j1] * tj
        bottom = table[i1, j0] * (1 - tj) + table[i1, j1] * tj
        return float(top * (1 - ti) + bottom * ti)


def _bracket(values: np.ndarray, x: float) -> tuple[int, int, float]:
    """Indices around ``x`` in sorted ``values`` and the interpolation weight (clamped below)."""
    if x <= values[0]:
        return 0, 0, 0.0
    j = int(np.searchsorted(values, x))
    if values[j] == x:
        return j, j, 0.0
    return j - 1, j, float((x - values[j - 1]) / (values[j] - values[j - 1]))


class LookupTableHardware(Hardware):
    """Costs measured on a real target, read from a CSV (format in the module docstring).

    Cost law: whatever was measured, interpolated bilinearly in kept channels, with bits
    rounded up to the nearest measured width. ``supported_bits`` are the measured widths.
    """

    def __init__(self, rows: list[dict], name: str = "lut", archetype: str = "lut", source: str = ""):
        self.name, self.archetype, self.source = name, archetype, source
        self._grids, self._warned = _build_grids(rows, name), set()
        widths = {int(r["w_bits"]) for r in rows} | {int(r["a_bits"]) for r in rows}
        self.supported_bits = check_supported_bits(widths, f"lookup table {name!r}")
        self._has_energy = all(np.isfinite(g.energy).all() for pairs in self._grids.values() for g in pairs.values())
        self._rows = len(rows)
        self._digest = hashlib.sha256(repr(sorted((tuple(sorted(r.items())) for r in rows))).encode()).hexdigest()[:16]

    @classmethod
    def from_csv(cls, path: str | Path, name: str | None = None, archetype: str = "lut") -> "LookupTableHardware":
        """Read a table written by a user or by ``metacompress hardware measure``.

        Raises:
            HardwareError: if the file is missing, lacks columns, or has bad or duplicate rows.
        """
        path = Path(path)
        if not path.is_file():
            raise HardwareError(f"lookup table {path} does not exist; write one with `metacompress hardware measure --out {path}` "
                                "or in the CSV format of metacompress.compressors.hardware.lookup")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise HardwareError(f"lookup table {path} lacks columns {missing}; required: {', '.join(REQUIRED_COLUMNS)}")
            rows = list(reader)
        if not rows:
            raise HardwareError(f"lookup table {path} has no rows")
        default = f"measured:{path.name}" if archetype == "measured" else path.stem
        return cls(rows, name=name or default, archetype=archetype, source=str(path))

    @property
    def has_energy(self) -> bool:
        return self._has_energy

    def _grids_for(self, layer: LayerSpec, w_bits: int, a_bits: int) -> tuple[_Grid, list[_Grid]]:
        """The grid of the executed bit pair, and every measured grid at or below it in both widths."""
        sig = layer_signature(layer)
        pairs = self._grids.get(sig)
        if pairs is None:
            raise HardwareError(f"lookup table {self.name!r} cannot price layer {layer.name!r} ({describe_signature(sig)}): "
                                "no rows with this shape; measure it (`metacompress hardware measure`) or add its rows")
        w, a = self.executed_bits(w_bits), self.executed_bits(a_bits)
        if (w, a) not in pairs:
            measured = ", ".join(f"W{pw}A{pa}" for pw, pa in sorted(pairs))
            raise HardwareError(f"lookup table {self.name!r} has no W{w}A{a} rows for layer {layer.name!r} "
                                f"({describe_signature(sig)}); measured: {measured}. Add W{w}A{a} rows for it")
        return pairs[(w, a)], [g for (pw, pa), g in pairs.items() if pw <= w and pa <= a]

    def _price(self, what: str, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        grid, narrower = self._grids_for(layer, w_bits, a_bits)
        key_in = 0 if layer.kind == "depthwise" else kept_in
        if key_in > grid.kept_in[-1] or kept_out > grid.kept_out[-1]:
            raise HardwareError(f"lookup table {self.name!r} measured layer {layer.name!r} up to kept_in={grid.kept_in[-1]}, "
                                f"kept_out={grid.kept_out[-1]}, not {kept_in}, {kept_out}; add rows for the larger shape")
        if (key_in < grid.kept_in[0] or kept_out < grid.kept_out[0]) and layer.name not in self._warned:
            self._warned.add(layer.name)
            log.warning("lookup table %s: layer %s at kept %d/%d is below the smallest measured shape; priced as that shape",
                        self.name, layer.name, kept_in, kept_out)
        # never cheaper than a measured narrower pair: keeps costs monotone in bits
        values = [g.price(g.latency if what == "latency" else g.energy, key_in, kept_out) for g in narrower]
        if not all(math.isfinite(v) for v in values):
            raise HardwareError(f"lookup table {self.name!r} has no energy_mj for layer {layer.name!r}; "
                                "use a latency, size or bitops budget, or add energy_mj to the table")
        return max(values)

    def layer_latency_ms(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        return self._price("latency", layer, kept_in, kept_out, w_bits, a_bits)

    def layer_energy_mj(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        return self._price("energy", layer, kept_in, kept_out, w_bits, a_bits)

    def describe(self) -> dict:
        return {"type": type(self).__name__, "name": self.name, "archetype": self.archetype, "source": self.source,
                "rows": self._rows, "signatures": len(self._grids), "supported_bits": list(self.supported_bits),
                "has_energy": self.has_energy, "content_sha256": self._digest}

    def signatures(self) -> list[Signature]:
        return list(self._grids)


def _parse(row: dict, line: int, where: str) -> tuple[Signature, tuple[int, int], int, int, float, float]:
    try:
        kind = row["kind"].strip()
        if kind not in LAYER_KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(LAYER_KINDS)}")
        kernel_text = (row["kernel"] or "").strip()
        kernel = tuple(int(k) for k in kernel_text.split("x")) if kernel_text else ()
        ints = [int(row[c]) for c in ("in_channels", "out_channels", "stride", "groups", "in_positions", "out_positions")]
        sig = (kind, ints[0], ints[1], kernel, ints[2], ints[3], ints[4], ints[5])
        kin, kout, w, a = (int(row[c]) for c in ("kept_in", "kept_out", "w_bits", "a_bits"))
        latency = float(row["latency_ms"])
        energy_text = (row.get("energy_mj") or "").strip()
        energy = float(energy_text) if energy_text else math.nan
        if not (math.isfinite(latency) and latency > 0) or energy < 0:
            raise ValueError(f"latency_ms {latency} must be a positive number and energy_mj non-negative")
        if not (0 < kin <= ints[0] and 0 < kout <= ints[1]):
            raise ValueError(f"kept_in {kin}, kept_out {kout} must be in 1..in_channels, 1..out_channels")
    except (KeyError, ValueError, TypeError) as exc:
        raise HardwareError(f"lookup table {where}, data row {line}: {exc}; see the format in "
                            "metacompress.compressors.hardware.lookup") from exc
    return sig, (w, a), (0 if kind == "depthwise" else kin), kout, latency, energy


def _build_grids(rows: list[dict], where: str) -> dict:
    cells: dict = {}
    for line, row in enumerate(rows, start=1):
        sig, pair, kin, kout, latency, energy = _parse(row, line, where)
        cell = cells.setdefault(sig, {}).setdefault(pair, {})
        if (kin, kout) in cell:
            raise HardwareError(f"lookup table {where}, data row {line}: duplicate measurement of "
                                f"{describe_signature(sig)} at kept {kin}/{kout}, W{pair[0]}A{pair[1]}; keep one row")
        cell[(kin, kout)] = (latency, energy)
    grids: dict = {}
    for sig, pairs in cells.items():
        if (8, 8) not in pairs:
            raise HardwareError(f"lookup table {where} has no W8A8 rows for {describe_signature(sig)}; "
                                "8-bit is the reference every budget is a fraction of, so measure it")
        for pair, cell in sorted(pairs.items()):
            ins, outs = sorted({k[0] for k in cell}), sorted({k[1] for k in cell})
            missing = [(i, o) for i in ins for o in outs if (i, o) not in cell]
            if missing:
                raise HardwareError(f"lookup table {where}: the kept grid of {describe_signature(sig)} at W{pair[0]}A{pair[1]} "
                                    f"is incomplete; add rows for kept_in/kept_out {missing[:5]}")
            lat = np.array([[cell[(i, o)][0] for o in outs] for i in ins])
            eng = np.array([[cell[(i, o)][1] for o in outs] for i in ins])
            grids.setdefault(sig, {})[pair] = _Grid(np.array(ins), np.array(outs), lat, eng)
    return grids

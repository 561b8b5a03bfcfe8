"""This machine's CPU through onnxruntime, measured at int8 and fp32: a lookup table that sees bits.

The torch measurement (``measure``) runs fp32 kernels whatever the bits. Here every
distinct layer shape of a model (and the embedding's probe layers) is built at each
kept-channel shape of the grid, exactly as ``measure.build_torch_layer`` builds it,
exported to ONNX twice and timed in onnxruntime at batch 1:

- int8: the layer as ``export_onnx`` writes a W8A8 layer (uint8 QDQ input, int8
  per-channel weights) with a uint8 QDQ on its output too, which is the next layer's
  input quantizer in a real chain and what lets onnxruntime fuse an integer kernel
  (QLinearConv, or an integer MatMul).
- fp32: the plain layer.

The table's W8A8 rows hold the int8 latency, so ``--hardware that.csv`` prices plans
as this CPU runs them in onnxruntime; the fp32 latency of the same shape is written in
the extra column ``fp32_latency_ms`` (readers ignore it) for the int8-vs-fp32 record.
Widths below 8 bits are priced as 8: onnxruntime has no faster kernel for them on CPU
(an int4 weight is dequantized). That is optimistic for ``export_onnx``'s own sub-8-bit
layers, whose lattice clip keeps onnxruntime from fusing them, so they run DQ + fp32:
plan at W8 where int8 speed matters. Energy is not measured.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from metacompress.compressors.hardware.embedding import PROBE_FRACTIONS, PROBE_LAYERS
from metacompress.compressors.hardware.lookup import LookupTableHardware, kept_grid, layer_signature, lut_row, write_lut_csv
from metacompress.compressors.hardware.measure import KEPT_FRACTIONS, build_torch_layer, time_call_ms
from metacompress.compressors.onnx_export import ActivationQDQ, WeightQDQ, fold_weight_quantizers, session, trace_to_onnx
from metacompress.compressors.quant import weight_scales
from metacompress.compressors.spec import LayerSpec, ModelSpec
from metacompress.errors import HardwareError

log = logging.getLogger(__name__)

# x86: VNNI (AVX-512 or AVX) and AMX make int8 dot products fast; without them int8 gains little over fp32.
# Arm: dot-product (asimddp) and int8 matrix multiply (i8mm).
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
FP32_COLUMN = "fp32_latency_ms"


def cpu_flags() -> dict[str, bool]:
    """Which of ``INT8_FLAGS`` this CPU reports (``/proc/cpuinfo``; all False where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    words = {word for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for word in line.split(":", 1)[1].split()}
    return {flag: flag in words for flag in INT8_FLAGS}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _uint8_qdq(t: torch.Tensor) -> ActivationQDQ:
    lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
    scale = max(hi - lo, 1e-6) / 255
    return ActivationQDQ(8, scale, int(round(-lo / scale)))


class _Int8Layer(nn.Module):
    def __init__(self, layer: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.layer, self.input_qdq = layer, _uint8_qdq(x)
        with torch.no_grad():
            self.output_qdq = _uint8_qdq(layer(x))
        parametrize.register_parametrization(layer, "weight", WeightQDQ(weight_scales(layer.weight, 8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_qdq(self.layer(self.input_qdq(x)))


def layer_onnx(layer: nn.Module, x: torch.Tensor, int8: bool) -> bytes:
    """One layer as ONNX bytes: plain fp32, or the int8 QDQ form described in the module docstring."""
    if not int8:
        return trace_to_onnx(layer.eval(), x).SerializeToString()
    proto = trace_to_onnx(_Int8Layer(layer, x).eval(), x)
    fold_weight_quantizers(proto.graph)
    return proto.SerializeToString()


def time_onnx_ms(model: bytes | str | Path, x: torch.Tensor, threads: int | None = 1, repeats: int = 7, warmup: int = 2,
                 min_repeat_ms: float = 0.5) -> float:
    """Median milliseconds of one onnxruntime run of ``model`` on ``x``."""
    sess = session(model, threads)
    feed = {sess.get_inputs()[0].name: x.numpy().astype(np.float32)}
    return time_call_ms(lambda: sess.run(None, feed), repeats, warmup, min_repeat_ms)


def measure_onnx_layers(layers: Iterable[LayerSpec], fractions: tuple[float, ...] = KEPT_FRACTIONS, repeats: int = 7,
                        warmup: int = 2, min_repeat_ms: float = 0.5, threads: int | None = 1, seed: int = 0) -> list[dict]:
    """Time every distinct layer shape at every kept shape, int8 and fp32: table rows (W8A8 = int8).

    Raises:
        HardwareError: for a fraction outside (0, 1], repeats below 1 or threads below 1.
    """
    if not fractions or any(not 0 < f <= 1 for f in fractions) or repeats < 1 or (threads is not None and threads < 1):
        raise HardwareError(f"cannot measure: kept fractions {fractions} must be in (0, 1], repeats {repeats} >= 1 and "
                            f"threads {threads} >= 1; e.g. --fractions 0.25 0.5 0.75 1.0 --repeats 7 --threads 1")
    torch.manual_seed(seed)
    rows, seen = [], set()
    for layer in layers:
        if layer_signature(layer) in seen:
            continue
        seen.add(layer_signature(layer))
        for kept_in, kept_out in kept_grid(layer, fractions):
            module, x = build_torch_layer(layer, kept_in, kept_out)
            fp32_ms = time_onnx_ms(layer_onnx(module, x, int8=False), x, threads, repeats, warmup, min_repeat_ms)
            int8_ms = time_onnx_ms(layer_onnx(module, x, int8=True), x, threads, repeats, warmup, min_repeat_ms)
            rows.append({**lut_row(layer, kept_in, kept_out, 8, 8, int8_ms), FP32_COLUMN: repr(fp32_ms)})
        log.info("measured %s in onnxruntime", layer.name)
    return rows


@dataclass(frozen=True)
class OnnxMeasurement:
    """A measured onnxruntime table and the int8-vs-fp32 summary of the model's own layers."""

    hardware: LookupTableHardware
    rows: int
    model_int8_ms: float  # sum over the model's layers at full width, batch 1
    model_fp32_ms: float
    layers_faster_int8: int  # distinct full-width model layer shapes where int8 beats fp32
    layers: int

    @property
    def int8_speedup(self) -> float:
        return self.model_fp32_ms / self.model_int8_ms


def measure_onnxruntime(spec: ModelSpec, out_path: str | Path, fractions: tuple[float, ...] = KEPT_FRACTIONS,
                        repeats: int = 7, warmup: int = 2, min_repeat_ms: float = 0.5, threads: int | None = 1,
                        seed: int = 0, include_probes: bool = True) -> OnnxMeasurement:
    """Measure ``spec``'s layers (and the embedding probes) in onnxruntime; write the table.

    The hardware is named ``measured:<file name>`` like a torch-measured table and prices
    every layer of ``spec`` at 8 bits as the int8 kernels run.
    """
    rows = measure_onnx_layers(spec.computing_layers, fractions, repeats, warmup, min_repeat_ms, threads, seed)
    if include_probes:
        rows += measure_onnx_layers(PROBE_LAYERS, PROBE_FRACTIONS, repeats, warmup, min_repeat_ms, threads, seed)
    path = write_lut_csv(out_path, rows, extra_columns=(FP32_COLUMN,))
    full = {layer_signature(layer): (layer.in_channels, layer.out_channels) for layer in spec.computing_layers}
    by_sig = {}
    for row, layer_sig in ((r, _row_signature(r)) for r in rows):
        if full.get(layer_sig) == (int(row["kept_in"]), int(row["kept_out"])):
            by_sig[layer_sig] = (float(row["latency_ms"]), float(row[FP32_COLUMN]))
    model_sigs = [layer_signature(layer) for layer in spec.computing_layers]
    return OnnxMeasurement(LookupTableHardware.from_csv(path, archetype="measured"), len(rows),
                           sum(by_sig[s][0] for s in model_sigs), sum(by_sig[s][1] for s in model_sigs),
                           sum(i < f for i, f in by_sig.values()), len(by_sig))


def _row_signature(row: dict) -> tuple:
    kernel = tuple(int(k) for k in row["kernel"].split("x")) if row["kernel"] else ()
    return (row["kind"], int(row["in_channels"]), int(row["out_channels"]), kernel, int(row["stride"]), int(row["groups"]),
            int(row["in_positions"]), int(row["out_positions"]))

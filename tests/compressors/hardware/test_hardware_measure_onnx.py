"""This CPU through onnxruntime: int8 and fp32 layers timed into a table that prices 8-bit for real."""

from __future__ import annotations

import csv

import numpy as np
import onnx

from metacompress.compressors.cost import total_cost
from metacompress.compressors.hardware import LookupTableHardware
from metacompress.compressors.hardware.lookup import kept_grid, layer_signature
from metacompress.compressors.hardware.measure import build_torch_layer, random_kept, tiny_resnet_spec
from metacompress.compressors.hardware.measure_onnx import FP32_COLUMN, INT8_FLAGS, cpu_flags, layer_onnx, measure_onnxruntime


def test_int8_layer_graph_is_fused_qdq_and_fp32_graph_is_plain():
    layer = tiny_resnet_spec().layers[1]  # b1.0: conv 16->16, 3x3
    module, x = build_torch_layer(layer, 8, 8)
    int8 = onnx.load_from_string(layer_onnx(module, x, int8=True))
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 3 and "Conv" in ops  # in, weight, out
    assert [i.data_type for i in int8.graph.initializer if i.name.endswith("weight_codes")] == [onnx.TensorProto.INT8]
    module, x = build_torch_layer(layer, 8, 8)
    assert [n.op_type for n in onnx.load_from_string(layer_onnx(module, x, int8=False)).graph.node] == ["Conv"]


def test_onnxruntime_table_prices_every_plan_at_int8(tmp_path):
    spec = tiny_resnet_spec()
    result = measure_onnxruntime(spec, tmp_path / "ort.csv", fractions=(0.5, 1.0), repeats=1, warmup=1,
                                 min_repeat_ms=0.05, include_probes=False)
    with (tmp_path / "ort.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    shapes = {layer_signature(layer): len(kept_grid(layer, (0.5, 1.0))) for layer in spec.layers}
    assert len(shapes) == 8 and len(rows) == result.rows == sum(shapes.values()) == 30  # depthwise: 2 kept shapes, the rest 4
    assert {(r["w_bits"], r["a_bits"]) for r in rows} == {("8", "8")}
    assert all(float(r[FP32_COLUMN]) > 0 for r in rows)
    hardware = LookupTableHardware.from_csv(tmp_path / "ort.csv", archetype="measured")
    assert hardware.supported_bits == (8,) and hardware.name == "measured:ort.csv"
    kept = random_kept(spec, np.random.default_rng(0))
    w4 = total_cost(spec, "latency", kept, [4] * len(spec.units), [4] * len(spec.units), hardware)
    w8 = total_cost(spec, "latency", kept, [8] * len(spec.units), [8] * len(spec.units), hardware)
    assert w4 == w8 > 0  # widths below 8 run the int8 kernels
    assert result.model_int8_ms > 0 and result.model_fp32_ms > 0 and result.layers == 8


def test_cpu_flags_name_every_int8_flag():
    assert set(cpu_flags()) == set(INT8_FLAGS)

"""Exact accounting of a compressed model: params, MACs, BitOps, size in bits, hardware cost.

Every function takes the model spec and per-unit vectors (channels kept, weight bits,
activation bits) rather than a ``Plan``, because the environment prices thousands of
partial plans per second during budget projection.

Size convention (HAQ's, made exact): each quantized layer stores its kept weights at
``w_bits``, one fp32 scale per kept output channel, its bias in fp32, and one fp32
scale plus one int32 zero-point for its input activations (an embedding table, whose
input is token ids, none); every other parameter
(BatchNorm/LayerNorm affine, raw positional-embedding parameters) stays fp32. BatchNorm running
statistics are buffers folded into the conv at deployment and are not counted. An embedding
lookup has no MACs, and its latency and energy are not modelled (0): it reads one row per token.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from metacompress.compressors.spec import LayerSpec, ModelSpec
from metacompress.errors import MetacompressError

BUDGET_KINDS = ("latency", "energy", "size", "bitops")
COST_UNITS = {"latency": "ms", "energy": "mJ", "size": "bits", "bitops": "BitOps"}
FP32_BITS = 32
ACT_QPARAM_BITS = 2 * FP32_BITS  # per quantized layer: fp32 scale + int32 zero-point
REFERENCE_BITS = 8  # budgets are fractions of the unpruned W8A8 model's cost


class LayerCostModel(Protocol):
    """What the accounting needs from a hardware: per-layer latency and energy."""

    def layer_latency_ms(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float: ...

    def layer_energy_mj(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float: ...


def layer_shapes(spec: ModelSpec, kept: Sequence[int]) -> list[tuple[int, int]]:
    """``(kept_in, kept_out)`` of every layer given each unit's kept channels."""
    return [(layer.kept_in(kept), layer.kept_out(kept)) for layer in spec.layers]


def count_params(spec: ModelSpec, kept: Sequence[int]) -> int:
    """All parameters of the pruned model (weights, biases, fp32 extras)."""
    total = spec.fixed_fp32_params
    for layer, (kin, kout) in zip(spec.layers, layer_shapes(spec, kept)):
        total += layer.weight_count(kin, kout) + (kout if layer.has_bias else 0)
    total += sum(unit.fp32_per_channel * kept[unit.index] for unit in spec.units)
    return total


def count_macs(spec: ModelSpec, kept: Sequence[int]) -> int:
    """Multiply-accumulates per sample of the quantizable layers of the pruned model."""
    return sum(layer.macs(kin, kout) for layer, (kin, kout) in zip(spec.layers, layer_shapes(spec, kept)))


def count_bitops(spec: ModelSpec, kept: Sequence[int], w_bits: Sequence[int], a_bits: Sequence[int]) -> int:
    """BitOps per sample: sum over layers of MACs x weight bits x activation bits."""
    return sum(
        layer.macs(kin, kout) * w_bits[layer.unit] * a_bits[layer.unit]
        for layer, (kin, kout) in zip(spec.layers, layer_shapes(spec, kept))
    )


def layer_size_bits(layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int) -> int:
    """Stored bits of one quantized layer (see the module docstring for the convention)."""
    bias = kept_out if layer.has_bias else 0
    activation_qparams = 0 if layer.is_lookup else ACT_QPARAM_BITS
    return layer.weight_count(kept_in, kept_out) * w_bits + (kept_out + bias) * FP32_BITS + activation_qparams


def size_bits(spec: ModelSpec, kept: Sequence[int], w_bits: Sequence[int]) -> int:
    """Model size in bits: quantized layers plus every parameter that stays fp32."""
    total = spec.fixed_fp32_params * FP32_BITS
    for layer, (kin, kout) in zip(spec.layers, layer_shapes(spec, kept)):
        total += layer_size_bits(layer, kin, kout, w_bits[layer.unit])
    total += sum(unit.fp32_per_channel * kept[unit.index] for unit in spec.units) * FP32_BITS
    return total


def layer_costs(
    spec: ModelSpec,
    kind: str,
    kept: Sequence[int],
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    hardware: LayerCostModel | None = None,
) -> list[float]:
    """Each layer's cost of ``kind`` (latency ms, energy mJ, size bits or BitOps).

    Size adds no per-layer share for the fp32 extras; ``total_cost`` does.
    """
    shapes = layer_shapes(spec, kept)
    if kind == "size":
        return [float(layer_size_bits(l, kin, kout, w_bits[l.unit])) for l, (kin, kout) in zip(spec.layers, shapes)]
    if kind == "bitops":
        return [float(l.macs(kin, kout) * w_bits[l.unit] * a_bits[l.unit]) for l, (kin, kout) in zip(spec.layers, shapes)]
    if kind not in BUDGET_KINDS:
        raise MetacompressError(f"budget kind {kind!r} is unknown; use one of {', '.join(BUDGET_KINDS)}")
    if hardware is None:
        raise MetacompressError(f"a {kind} budget needs a hardware; pass hardware=NAME (see `metacompress hardware list`)")
    price = hardware.layer_latency_ms if kind == "latency" else hardware.layer_energy_mj
    return [0.0 if l.is_lookup else price(l, kin, kout, w_bits[l.unit], a_bits[l.unit]) for l, (kin, kout) in zip(spec.layers, shapes)]


def total_cost(
    spec: ModelSpec,
    kind: str,
    kept: Sequence[int],
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    hardware: LayerCostModel | None = None,
) -> float:
    """Whole-model cost of ``kind`` for the given per-unit choices."""
    if kind == "size":
        return float(size_bits(spec, kept, w_bits))
    return float(sum(layer_costs(spec, kind, kept, w_bits, a_bits, hardware)))


def unit_cost_shares(
    spec: ModelSpec,
    kind: str,
    kept: Sequence[int],
    w_bits: Sequence[int],
    a_bits: Sequence[int],
    hardware: LayerCostModel | None = None,
) -> list[float]:
    """Each unit's share of the layer costs (sums to 1 over units): where the budget goes."""
    per_unit = [0.0] * len(spec.units)
    for layer, cost in zip(spec.layers, layer_costs(spec, kind, kept, w_bits, a_bits, hardware)):
        per_unit[layer.unit] += cost
    total = sum(per_unit) or 1.0
    return [c / total for c in per_unit]

"""What ``analyze`` finds in a model: layers, compressible units, and the model as a whole.

These are plain frozen value objects: hardware models, cost accounting, the environment's
features and the baselines all read them, and none of them needs the ``nn.Module``.

Vocabulary:
    layer: one Conv1d/Conv2d/Conv3d/Linear module, quantized with its unit's bits.
    unit:  one prunable channel group from Torch-Pruning's dependency graph (every layer
           whose *output* channels are coupled, e.g. all convs feeding one residual stream,
           or a depthwise conv with its producer), plus the layers it quantizes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from math import prod

LAYER_KINDS = ("conv", "depthwise", "linear")


@dataclass(frozen=True)
class LayerSpec:
    """One quantizable layer and how its size depends on the channels kept.

    Args:
        name: module path in the model, e.g. ``"layer1.0.conv2"``.
        kind: ``"conv"`` (Conv1d/2d/3d, grouped included), ``"depthwise"`` (one filter per
            channel), ``"linear"`` or ``"embedding"`` (a lookup table: in_channels is its
            vocabulary, out_channels its width, positions the tokens looked up).
        in_channels: input channels (Linear: in_features) of the unpruned layer.
        out_channels: output channels (Linear: out_features) of the unpruned layer.
        kernel_size: kernel extent per spatial dim; ``()`` for Linear.
        stride: first stride (1 for Linear).
        groups: convolution groups (depthwise: ``groups == in_channels == out_channels``).
        in_positions: input spatial positions per sample per channel (H*W, length L, or
            tokens T; 1 for a Linear on a flat vector).
        out_positions: output spatial positions per sample per channel.
        has_bias: whether the layer has a bias vector.
        unit: index of the unit that prunes this layer's output channels.
        in_units: ``(unit, features_per_channel)`` pairs: which units prune this layer's
            inputs and how many input features each of their channels feeds (``H*W`` for a
            Linear after a flatten, 1 otherwise).
        in_fixed: input features that no unit prunes (e.g. image channels).
        transposed: a transposed conv: its kernel is applied at every *input* position.
        out_per_channel: output channels each channel of its unit owns (2 for the conv before
            a GLU, whose two halves gate each other; 1 otherwise).
        out_fixed: output channels past its unit's, which no unit prunes (ReXNet's widening
            blocks add the residual to their first channels only:
            ``cat([x[:, :C] + shortcut, x[:, C:]])``, so the unit is those C).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: int
    groups: int
    in_positions: int
    out_positions: int
    has_bias: bool
    unit: int
    in_units: tuple[tuple[int, int], ...] = ()
    in_fixed: int = 0
    transposed: bool = False
    out_per_channel: int = 1
    out_fixed: int = 0

    @property
    def is_lookup(self) -> bool:
        """An embedding table: no MACs, no input activations to quantize, latency and energy not modelled."""
        return self.kind == "embedding"

    @property
    def kernel_elems(self) -> int:
        return prod(self.kernel_size) if self.kernel_size else 1

    def kept_in(self, kept: tuple[int, ...] | list[int]) -> int:
        """Input features kept, given every unit's kept channel count (indexed by unit)."""
        return self.in_fixed + sum(kept[u] * per_channel for u, per_channel in self.in_units)

    def kept_out(self, kept: tuple[int, ...] | list[int]) -> int:
        """Output channels kept, given every unit's kept channel count (indexed by unit)."""
        return self.out_fixed + kept[self.unit] * self.out_per_channel

    def inputs_per_output(self, kept_in: int) -> int:
        """Input features each output channel reads (1 for depthwise, in/groups otherwise)."""
        if self.kind == "depthwise":
            return 1
        return kept_in // self.groups

    def macs(self, kept_in: int, kept_out: int) -> int:
        """Multiply-accumulates per sample with ``kept_in`` inputs and ``kept_out`` outputs."""
        if self.is_lookup:
            return 0
        positions = self.in_positions if self.transposed else self.out_positions
        return positions * kept_out * self.kernel_elems * self.inputs_per_output(kept_in)

    def weight_count(self, kept_in: int, kept_out: int) -> int:
        """Weights (bias excluded) of the layer at the kept shape."""
        return kept_out * self.kernel_elems * self.inputs_per_output(kept_in)

    def input_elems(self, kept_in: int) -> int:
        """Input activation elements per sample (what the layer reads; a lookup: one id per position)."""
        if self.is_lookup:
            return self.in_positions
        return kept_in * self.in_positions

    def output_elems(self, kept_out: int) -> int:
        """Output activation elements per sample (what the layer writes)."""
        return kept_out * self.out_positions


@dataclass(frozen=True)
class UnitSpec:
    """One compressible unit: a prunable channel group and the layers it quantizes.

    Args:
        index: position in execution order (0 = first unit the input reaches).
        name: a readable name: the first layer's module path, ``+N`` if it holds more.
        layers: module paths of the layers whose output channels this unit owns.
        channels: channels of the group in the unpruned model.
        channel_step: channels are removed in multiples of this (e.g. an attention head's
            width, so whole heads go); found by trial pruning at analysis time.
        prunable: False if the group cannot be pruned (then only its bits are chosen).
        frozen: True for the classifier head and user-named layers: never pruned and kept
            at 8-bit weights and activations.
        reason: why the unit is not prunable or frozen ("" if it is prunable).
        fp32_per_channel: parameters that stay fp32 per channel of the group (e.g. BatchNorm
            weight and bias: 2), not counting the layers' biases.
    """

    index: int
    name: str
    layers: tuple[str, ...]
    channels: int
    channel_step: int = 1
    prunable: bool = True
    frozen: bool = False
    reason: str = ""
    fp32_per_channel: int = 0

    @property
    def min_kept(self) -> int:
        """Fewest channels a plan may keep (one step), or all if not prunable."""
        return self.channel_step if self.prunable else self.channels


@dataclass(frozen=True)
class ModelSpec:
    """The compressible structure of one model, as ``analyze`` found it.

    Args:
        units: compressible units in execution order.
        layers: quantizable layers in execution order.
        input_shape: the example input's shape without the batch dim.
        fixed_fp32_params: parameters outside every unit that stay fp32 (positional
            embeddings, LayerNorm of an unprunable stream, ...).
        unsupported: ``(module path, type name)`` of parameterised modules left untouched.
        total_params: every parameter of the unpruned model.
        routes: Linears whose weights a parent module reads in its forward code, run through the
            layers in every private copy (``weight_reads``).
        folds: layers that transform their own weight in forward (weight standardization), the
            transform folded into the weight in every private copy (``weight_reads``).
    """

    units: tuple[UnitSpec, ...]
    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...]
    fixed_fp32_params: int = 0
    unsupported: tuple[tuple[str, str], ...] = ()
    total_params: int = 0
    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    folds: tuple[tuple[str, tuple[int, ...]], ...] = ()
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.compute_fingerprint())

    def compute_fingerprint(self) -> str:
        """A short hash of the structure: plans are bound to the model by it."""
        structure = {
            "units": [(u.name, u.layers, u.channels, u.channel_step, u.prunable, u.frozen) for u in self.units],
            # ``transposed``, ``out_per_channel`` and ``out_fixed`` only where not their default: the other
            # models keep the fingerprints their saved plans carry
            "layers": [{k: v for k, v in asdict(layer).items()
                        if (k, v) not in (("transposed", False), ("out_per_channel", 1), ("out_fixed", 0))}
                       for layer in self.layers],
            "input_shape": list(self.input_shape),
        }
        return hashlib.sha256(json.dumps(structure, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def full_kept(self) -> tuple[int, ...]:
        """Every unit's channel count: the unpruned model."""
        return tuple(u.channels for u in self.units)

    @property
    def computing_layers(self) -> tuple[LayerSpec, ...]:
        """All but embedding lookups: the layers hardware prices, ``hardware measure`` times and whose inputs are quantized."""
        return tuple(layer for layer in self.layers if not layer.is_lookup)

    def layers_of(self, unit: int) -> list[LayerSpec]:
        return [layer for layer in self.layers if layer.unit == unit]

    def macs(self) -> int:
        """Multiply-accumulates per sample of the unpruned model's quantizable layers."""
        full = self.full_kept
        return sum(layer.macs(layer.kept_in(full), layer.out_channels) for layer in self.layers)

    def to_frame(self):
        """One row per unit: name, kind, channels, layers, params, MACs (pandas DataFrame)."""
        import pandas as pd

        full = self.full_kept
        rows = []
        for unit in self.units:
            layers = self.layers_of(unit.index)
            kinds = sorted({layer.kind for layer in layers})
            rows.append(
                {
                    "unit": unit.index,
                    "name": unit.name,
                    "kind": "+".join(kinds),
                    "layers": len(layers),
                    "channels": unit.channels,
                    "step": unit.channel_step,
                    "prunable": unit.prunable,
                    "frozen": unit.frozen,
                    "params": sum(
                        layer.weight_count(layer.kept_in(full), layer.out_channels) + layer.out_channels * layer.has_bias
                        for layer in layers
                    ),
                    "macs": sum(layer.macs(layer.kept_in(full), layer.out_channels) for layer in layers),
                    "note": unit.reason,
                }
            )
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        frame = self.to_frame()
        lines = [frame.to_string(index=False)]
        lines.append(f"{len(self.units)} units, {len(self.layers)} layers, {self.total_params:,} params, {self.macs():,} MACs")
        if self.unsupported:
            lines.append("left untouched: " + ", ".join(f"{n} ({t})" for n, t in self.unsupported))
        return "\n".join(lines)

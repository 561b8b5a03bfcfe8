"""``nn.ConvTranspose1d/2d/3d`` with its weight stored output channel first, so it is compressed like a conv.

A transposed conv (U-Net and autoencoder decoders, GAN generators, Conv-TasNet's decoder)
stores its weight as ``(in, out, *kernel)``. Every stage here reads dim 0 of a layer's weight
as its output channels: per-output-channel quantization scales (the axis an integer kernel
can apply them on), masking and ranking output rows, the saved codes and the ONNX
``DequantizeLinear`` axis. ``OutputMajorConvTranspose`` computes the same function from the
weight stored ``(out, in, *kernel)`` and transposes it in ``forward``; its Torch-Pruning
pruner slices that layout. Like ``SplitAttention`` it only ever replaces layers in a private
copy (``surgery.plain_copy``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

_TRANSPOSED = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


class OutputMajorConvTranspose(nn.Module):
    """A transposed conv whose ``weight`` is ``(out_channels, in_channels / groups, *kernel)``, as a conv's.

    It keeps the attributes analysis reads from a conv (channels, kernel, stride, groups) and
    ``transposed = True``, which prices its multiply-accumulates per *input* position. A
    grouped one (``groups > 1``: depthwise upsamplers, grouped decoders) is quantize-only: its
    pruner refuses, since a group's inputs and outputs would have to go together.
    """

    transposed = True

    def __init__(self, source: nn.modules.conv._ConvTransposeNd) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = source.in_channels, source.out_channels, source.groups
        self.kernel_size, self.stride, self.padding = source.kernel_size, source.stride, source.padding
        self.output_padding, self.dilation = source.output_padding, source.dilation
        self.weight = nn.Parameter(self._swap_major(source.weight.detach(), source.groups).clone(),
                                   requires_grad=source.weight.requires_grad)
        self.bias = nn.Parameter(source.bias.detach().clone()) if source.bias is not None else None
        self.train(source.training)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        dims = len(self.kernel_size)
        output_padding = self.output_padding
        if output_size is not None:  # the size nn.ConvTranspose's forward accepts, resolved its way
            output_padding = nn.modules.conv._ConvTransposeNd._output_padding(
                self, x, output_size, self.stride, self.padding, self.kernel_size, dims, self.dilation)
        return _TRANSPOSED[dims - 1](x, self._swap_major(self.weight, self.groups), self.bias, self.stride, self.padding,
                                     output_padding, self.groups, self.dilation)

    @staticmethod
    def _swap_major(weight: torch.Tensor, groups: int) -> torch.Tensor:
        """``(A, B / groups, *k)`` to ``(B, A / groups, *k)``, group by group (its own inverse)."""
        a, b_per_group, *kernel = weight.shape
        return weight.reshape(groups, a // groups, b_per_group, *kernel).transpose(1, 2).reshape(groups * b_per_group, a // groups, *kernel)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride} (weight stored out-major)"


class OutputMajorPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for ``OutputMajorConvTranspose``: outputs are dim 0, inputs dim 1 (groups of 1 only)."""

    def prune_out_channels(self, layer: OutputMajorConvTranspose, idxs: Sequence[int]) -> nn.Module:
        _refuse_grouped(layer)
        keep = sorted(set(range(layer.out_channels)) - set(int(i) for i in idxs))
        layer.out_channels = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        return layer

    def prune_in_channels(self, layer: OutputMajorConvTranspose, idxs: Sequence[int]) -> nn.Module:
        _refuse_grouped(layer)
        keep = sorted(set(range(layer.in_channels)) - set(int(i) for i in idxs))
        layer.in_channels = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        return layer

    def get_out_channels(self, layer: OutputMajorConvTranspose) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: OutputMajorConvTranspose) -> int:
        return layer.in_channels


def _refuse_grouped(layer: OutputMajorConvTranspose) -> None:
    if layer.groups > 1:
        raise NotImplementedError(f"a grouped transposed conv ({layer.groups} groups) is quantized, not pruned")


def convertible(module: nn.Module) -> bool:
    """A transposed conv with zero padding (the only padding mode PyTorch's transposed convs run)."""
    return isinstance(module, nn.modules.conv._ConvTransposeNd) and module.padding_mode == "zeros"

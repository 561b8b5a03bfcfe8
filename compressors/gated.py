"""An ``nn.GLU`` becomes a ``SplitGLU`` in the private copy, so the layers around it can be pruned.

A Conformer's convolution module (torchaudio's, ESPnet's, NeMo's, transformers' Wav2Vec2-Conformer,
the pretrained torchfcpe pitch estimator) and gated CNNs widen with a pointwise conv to 2C
channels, then gate one half with the other: ``a * sigmoid(b)`` for ``a, b = x.chunk(2, dim)``.
Channel ``c`` of the gate's output needs channels ``c`` and ``c + C`` of the conv before it,
and nothing after the gate can be pruned without both. ``F.glu`` is one opaque op to
Torch-Pruning's tracer, which maps the 2C indices straight onto the C-channel layers after it
(past their size), so the whole module was quantize-only. Written as a chunk and a product,
the tracer follows both halves: analysis then pairs the conv's two channels into one unit
channel (``groups.group_of``), and ``LayerSpec.out_per_channel`` prices the conv at two
output channels per channel kept.
"""

from __future__ import annotations

import torch
from torch import nn


def convertible(module: nn.Module) -> bool:
    """A gated linear unit module (a functional ``F.glu`` call cannot be swapped and stays unprunable)."""
    return isinstance(module, nn.GLU)


class SplitGLU(nn.Module):
    """``nn.GLU(dim)`` as a chunk and a product: the same outputs, exactly."""

    def __init__(self, glu: nn.GLU) -> None:
        super().__init__()
        self.dim = glu.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=self.dim)
        return value * torch.sigmoid(gate)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

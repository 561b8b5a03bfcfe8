"""A LayerNorm over a pruned group's channels normalises over the channels a plan keeps.

A transformer's residual stream, BERT's hidden width, an MLP block's LayerNorm: removing
channels there changes the norm's mean and variance over the channels that stay, so search
mode's zeroed channels (which the norm would still count) and export's removed ones would
disagree, and such groups were quantize-only. In the private copy an ``nn.LayerNorm`` over
its last dimension becomes a ``MaskableLayerNorm`` (a class swap: the same parameters, state
and Torch-Pruning pruner); ``mask_unit`` marks its ``removed`` channels, which the norm then
leaves out of its statistics and sets to 0: what the physically pruned norm computes on the
channels it keeps. Subclasses with their own ``forward`` (timm's channels-first
``LayerNorm2d``) and GroupNorm stay quantize-only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def convertible(module: nn.Module) -> bool:
    """A plain ``nn.LayerNorm`` over one dimension (the channels a group prunes)."""
    return type(module) is nn.LayerNorm and len(module.normalized_shape) == 1


class MaskableLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose ``removed`` channels (a bool per channel, set by masking) are left out.

    ``removed`` is a plain attribute, not a buffer: it is search state, never saved, pruned
    or exported, and ``clear_removed`` resets it whenever the masks are restored.
    """

    removed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.removed is None:
            return super().forward(x)
        kept = torch.nonzero(~self.removed).flatten().to(x.device)
        weight = None if self.weight is None else self.weight[kept]
        bias = None if self.bias is None else self.bias[kept]
        normed = F.layer_norm(x.index_select(-1, kept), (len(kept),), weight, bias, self.eps)
        return x.new_zeros(x.shape).index_copy(-1, kept, normed)

    def mark_removed(self, channels: torch.Tensor) -> None:
        """Leave ``channels`` out from now on (with those already left out)."""
        if self.removed is None:
            self.removed = torch.zeros(self.normalized_shape[0], dtype=torch.bool)
        self.removed[channels.cpu()] = True


def as_maskable(norm: nn.LayerNorm) -> MaskableLayerNorm:
    """The same module, its class swapped (``plain_copy`` calls this on its own copy only)."""
    norm.__class__ = MaskableLayerNorm
    return norm


def as_plain(model: nn.Module) -> None:
    """Give a model no stage will mask (an export, a reloaded export) its ``nn.LayerNorm`` class back."""
    for module in model.modules():
        if type(module) is MaskableLayerNorm:
            module.__class__ = nn.LayerNorm


def clear_removed(model: nn.Module) -> None:
    """Forget every ``MaskableLayerNorm``'s removed channels: the masks were restored."""
    for module in model.modules():
        if isinstance(module, MaskableLayerNorm):
            module.removed = None

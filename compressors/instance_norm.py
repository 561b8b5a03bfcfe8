"""An affine ``nn.InstanceNorm`` becomes a ``PlainInstanceNorm`` in the private copy, so it can be pruned.

MONAI's networks (BasicUNet, DynUNet, SegResNet's blocks, UNETR's decoder) and style-transfer
and GAN generators normalise each channel of each sample on its own, with a learned scale
and shift per channel: ``nn.InstanceNorm{1,2,3}d(affine=True)``. Like a BatchNorm, its
channels go with the conv that feeds it. But ``F.instance_norm`` returns a reshaped view, and
an in-place activation after it (MONAI's ``ADN`` uses ``LeakyReLU(inplace=True)``) rebases that
view's autograd history: Torch-Pruning's trace then loses the norm, prunes the conv before it
and leaves the norm at its old width, and no channel of the unit can be removed. The same
function written as per-channel reductions (``torch.var_mean`` over the spatial axes) keeps
the norm in the trace; Torch-Pruning's own ``InstanceNormPruner`` slices it.
"""

from __future__ import annotations

import torch
from torch import nn

INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def convertible(module: nn.Module) -> bool:
    """An affine instance norm that normalises by each sample's own statistics (no running statistics)."""
    return isinstance(module, INSTANCE_NORMS) and module.affine and not module.track_running_stats


class PlainInstanceNorm(nn.Module):
    """``nn.InstanceNorm{1,2,3}d(affine=True)`` computed with reductions over the spatial axes (equal to 1e-6).

    Keeps ``num_features``, ``affine``, ``eps``, ``weight`` and ``bias`` under their names,
    which is what Torch-Pruning's ``InstanceNormPruner`` and the masks read.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = norm.num_features, norm.eps, True
        self.weight = nn.Parameter(norm.weight.detach().clone(), requires_grad=norm.weight.requires_grad)
        self.bias = nn.Parameter(norm.bias.detach().clone(), requires_grad=norm.bias.requires_grad)
        self.train(norm.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, x.ndim))
        var, mean = torch.var_mean(x, spatial, correction=0, keepdim=True)
        per_channel = (1, -1) + (1,) * len(spatial)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)

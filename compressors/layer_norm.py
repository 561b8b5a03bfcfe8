"""A LayerNorm over a pruned group's channels normalises over the channels a plan keeps.

A transformer's residual stream, BERT's hidden width, an MLP block's LayerNorm: removing
channels there changes the norm's mean and variance over the channels that stay, so search
mode's zeroed channels (which the norm would still count) and export's removed ones would
disagree, and such groups were quantize-only. In the private copy every ``nn.LayerNorm``
over one dimension (subclasses included: timm's own ``LayerNorm``, its channels-first
``LayerNorm2d``, which permute around ``F.layer_norm``) runs its own forward through
``LeaveOutRemoved``; ``mask_unit`` marks its removed channels, and its ``F.layer_norm`` call
then normalises over the others and returns 0 for them: what the physically pruned norm
computes on the channels it keeps. A norm that computes its statistics by hand (no
``F.layer_norm`` call) is not changed: the trial prune finds the disagreement and its group
stays quantize-only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class LeaveOutRemoved:
    """A LayerNorm's own forward, its ``F.layer_norm`` call left without the ``removed`` channels.

    ``removed`` (a bool per channel, or None) is search state: never saved, pruned or
    exported, and reset by ``clear_removed`` whenever the masks are restored. An instance
    ``forward`` (as ``weight_reads`` installs), so deep copies and pickles keep it.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        self.norm = norm
        self.removed: torch.Tensor | None = None

    def __call__(self, *args, **kwargs):
        if self.removed is None:
            return type(self.norm).forward(self.norm, *args, **kwargs)
        with _KeptChannels(self.norm.normalized_shape, self.removed):
            return type(self.norm).forward(self.norm, *args, **kwargs)


class _KeptChannels(TorchFunctionMode):
    """``F.layer_norm`` over the kept channels of its last dimension; the removed ones are 0."""

    def __init__(self, shape: tuple[int, ...], removed: torch.Tensor) -> None:
        super().__init__()
        self.shape, self.removed = tuple(shape), removed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.layer_norm:
            return func(*args, **kwargs)
        x, shape, weight, bias, eps = _layer_norm_arguments(*args, **kwargs)
        if tuple(shape) != self.shape:
            return func(*args, **kwargs)
        kept = torch.nonzero(~self.removed).flatten().to(x.device)
        weight = None if weight is None else weight[kept]
        bias = None if bias is None else bias[kept]
        normed = F.layer_norm(x.index_select(-1, kept), (len(kept),), weight, bias, eps)
        return x.new_zeros(x.shape).index_copy(-1, kept, normed)


def _layer_norm_arguments(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002 (F.layer_norm's names)
    return input, normalized_shape, weight, bias, eps


def convertible(module: nn.Module) -> bool:
    """A LayerNorm over one dimension (the channels a group prunes), not yet running ``LeaveOutRemoved``."""
    return isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1 and not maskable(module)


def maskable(module: nn.Module) -> bool:
    """Does ``module`` run ``LeaveOutRemoved`` (a private copy's LayerNorm)?"""
    return isinstance(module.__dict__.get("forward"), LeaveOutRemoved)


def as_maskable(norm: nn.LayerNorm) -> nn.LayerNorm:
    """The same module, its forward run through ``LeaveOutRemoved`` (``plain_copy`` calls this on its own copy only)."""
    norm.forward = LeaveOutRemoved(norm)
    return norm


def mark_removed(norm: nn.Module, channels: torch.Tensor) -> None:
    """Leave ``channels`` of a maskable norm out from now on (with those already left out)."""
    forward = norm.__dict__["forward"]
    if forward.removed is None:
        forward.removed = torch.zeros(norm.normalized_shape[0], dtype=torch.bool)
    forward.removed[channels.cpu()] = True


def clear_removed(model: nn.Module) -> None:
    """Forget every maskable norm's removed channels: the masks were restored."""
    for module in model.modules():
        if maskable(module):
            module.forward.removed = None


def as_plain(model: nn.Module) -> None:
    """Give the norms of a model no stage will mask (an export, a reloaded export) their own forward back."""
    for module in model.modules():
        if maskable(module):
            del module.forward

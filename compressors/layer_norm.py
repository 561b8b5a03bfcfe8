"""A LayerNorm over a pruned group's channels normalises over the channels a plan keeps.

A transformer's residual stream, BERT's hidden width, an MLP block's LayerNorm: removing
channels there changes the norm's mean and variance over the channels that stay, so search
mode's zeroed channels (which the norm would still count) and export's removed ones would
disagree, and such groups were quantize-only. In the private copy every ``nn.LayerNorm``
over one dimension (subclasses included: timm's own ``LayerNorm``, its channels-first
``LayerNorm2d``, which permute around ``F.layer_norm``) runs its own forward through
``LeaveOutRemoved``; ``mask_unit`` marks its removed channels, and its ``F.layer_norm`` call
then normalises over the others and returns 0 for them: what the physically pruned norm
computes on the channels it keeps. A GroupNorm with one group (PoolFormer's and the
MetaFormers' norm: a LayerNorm over the channels and positions together) is treated the same
way through its ``F.group_norm`` call. A norm that computes its statistics by hand is not
changed: the trial prune finds the disagreement and its group stays quantize-only, as does a
GroupNorm of several groups (removing channels would move them across groups).
"""

from __future__ import annotations

import inspect
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class LeaveOutRemoved:
    """A norm's own forward, its ``F.layer_norm`` (or one-group ``F.group_norm``) call left without the ``removed`` channels.

    ``removed`` (a bool per channel, or None) is search state: never saved, pruned or
    exported, and reset by ``clear_removed`` whenever the masks are restored. An instance
    ``forward`` (as ``weight_reads`` installs), so deep copies and pickles keep it.
    """

    def __init__(self, norm: nn.LayerNorm | nn.GroupNorm) -> None:
        self.norm = norm
        self.removed: torch.Tensor | None = None

    def __call__(self, *args, **kwargs):
        if self.removed is None:
            return type(self.norm).forward(self.norm, *args, **kwargs)
        with _KeptChannels(channel_count(self.norm), self.removed):
            return type(self.norm).forward(self.norm, *args, **kwargs)


class _KeptChannels(TorchFunctionMode):
    """The norm's call over its kept channels (``F.layer_norm``'s last dim, ``F.group_norm``'s dim 1); the removed ones are 0."""

    def __init__(self, channels: int, removed: torch.Tensor) -> None:
        super().__init__()
        self.channels, self.removed = channels, removed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (F.layer_norm, F.group_norm):
            return func(*args, **kwargs)
        call = inspect.signature(func).bind(*args, **kwargs)  # positional or by name, as the norm's code calls it
        call.apply_defaults()
        x, weight, bias, eps = (call.arguments[name] for name in ("input", "weight", "bias", "eps"))
        if func is F.layer_norm:
            dim, matches = -1, tuple(call.arguments["normalized_shape"]) == (self.channels,)
        else:
            dim, matches = 1, call.arguments["num_groups"] == 1 and x.shape[1] == self.channels
        if not matches:
            return func(*args, **kwargs)
        kept = torch.nonzero(~self.removed).flatten().to(x.device)
        weight = None if weight is None else weight[kept]
        bias = None if bias is None else bias[kept]
        kept_x = x.index_select(dim, kept)
        normed = F.layer_norm(kept_x, (len(kept),), weight, bias, eps) if dim == -1 else F.group_norm(kept_x, 1, weight, bias, eps)
        return x.new_zeros(x.shape).index_copy(dim, kept, normed)


def convertible(module: nn.Module) -> bool:
    """A LayerNorm over one dimension (the channels a group prunes) or a one-group GroupNorm, not yet running ``LeaveOutRemoved``."""
    one_dim = isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1
    one_group = isinstance(module, nn.GroupNorm) and module.num_groups == 1
    return (one_dim or one_group) and not maskable(module)


def channel_count(norm: nn.Module) -> int:
    """The channels a maskable norm normalises."""
    return norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.normalized_shape[0]


def maskable(module: nn.Module) -> bool:
    """Does ``module`` run ``LeaveOutRemoved`` (a private copy's LayerNorm)?"""
    return isinstance(module.__dict__.get("forward"), LeaveOutRemoved)


def as_maskable(norm: nn.Module) -> nn.Module:
    """The same module, its forward run through ``LeaveOutRemoved`` (``plain_copy`` calls this on its own copy only)."""
    norm.forward = LeaveOutRemoved(norm)
    return norm


def mark_removed(norm: nn.Module, channels: torch.Tensor) -> None:
    """Leave ``channels`` of a maskable norm out from now on (with those already left out)."""
    forward = norm.__dict__["forward"]
    if forward.removed is None:
        forward.removed = torch.zeros(channel_count(norm), dtype=torch.bool)
    forward.removed[channels.cpu()] = True


def maskable_norms(model: nn.Module) -> list[nn.Module]:
    """The norms of ``model`` that run ``LeaveOutRemoved`` (found once: a search model resets them at every plan)."""
    return [module for module in model.modules() if maskable(module)]


def clear_removed(norms: Iterable[nn.Module]) -> None:
    """Forget these maskable norms' removed channels: the masks were restored."""
    for norm in norms:
        norm.forward.removed = None


def as_plain(model: nn.Module) -> None:
    """Give the norms of a model no stage will mask (an export, a reloaded export) their own forward back."""
    for module in model.modules():
        if maskable(module):
            del module.forward

"""A LayerNorm or RMSNorm over a pruned group's channels normalises over the channels a plan keeps.

A transformer's residual stream, BERT's hidden width, an MLP block's LayerNorm: removing
channels there changes the norm's mean and variance over the channels that stay, so search
mode's zeroed channels (which the norm would still count) and export's removed ones would
disagree, and such groups were quantize-only. In the private copy every ``nn.LayerNorm``
over one dimension (subclasses included: timm's own ``LayerNorm``, its channels-first
``LayerNorm2d``, which permute around ``F.layer_norm``) runs its own forward through
``LeaveOutRemoved``; ``mask_unit`` marks its removed channels, and its ``F.layer_norm`` call
then normalises over the others and returns 0 for them: what the physically pruned norm
computes on the channels it keeps. ``nn.RMSNorm`` is treated the same way through its
``F.rms_norm`` call, and a GroupNorm through ``F.group_norm``: with one group (PoolFormer's
and the MetaFormers' norm) it is a LayerNorm over the channels and positions together; with G
groups (BiT, GroupNorm ResNets, MONAI's SegResNet, diffusion U-Nets) each group is
normalised over its kept channels, which the unit removes in equal numbers from every group
(``groups.group_of`` gives it G channel groups, as a grouped conv's), so that every channel
stays in its group after the physical prune; with one channel per group (an instance norm
written as a GroupNorm, a narrow BiT bottleneck) any channel goes, and its group with it.

Many libraries compute the norm by hand: Llama's, Mistral's, Qwen's and T5's RMSNorm
(``x * rsqrt(x.pow(2).mean(-1) + eps) * weight``), Gemma's (``* (1 + weight)``), ConvNeXt's
reference channels-first LayerNorm. Such a module is recognised by what it computes (``standard_form``): its output
equals a standard norm's, with its own ``weight`` (and ``bias``) and its own ``eps``, on
probe inputs and a probe weight. When channels are removed, that standard norm runs over the
kept ones in its place; otherwise, and in every export, its own forward runs. A module that
computes something else (timm's ``SimpleNorm``, which divides by the standard deviation
without centring; a hard-coded ``eps``) is not
changed: the trial prune finds the disagreement and its group stays quantize-only.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

# a hand-written norm's epsilon, under the names libraries give it (timm and ConvNeXt, transformers, Keras ports)
EPS_NAMES = ("eps", "variance_epsilon", "epsilon")
StandardForm = Callable[[nn.Module, torch.Tensor, float], torch.Tensor]


class LeaveOutRemoved:
    """A norm's own forward, its ``F.layer_norm`` (``F.group_norm``, ``F.rms_norm``) call left without the ``removed`` channels.

    A hand-written norm (``form`` set: the standard norm it computes) runs that standard norm
    instead while channels are removed. ``removed`` (a bool per channel, or None) is search
    state: never saved, pruned or exported, and reset by ``clear_removed`` whenever the masks
    are restored. An instance ``forward`` (as ``weight_reads`` installs), so deep copies and
    pickles keep it.
    """

    def __init__(self, norm: nn.Module, form: tuple[StandardForm, float] | None = None) -> None:
        self.norm, self.form = norm, form
        self.removed: torch.Tensor | None = None

    def __call__(self, *args, **kwargs):
        if self.removed is None:
            return type(self.norm).forward(self.norm, *args, **kwargs)
        with _KeptChannels(channel_count(self.norm), self.removed):
            if self.form is None:
                return type(self.norm).forward(self.norm, *args, **kwargs)
            compute, eps = self.form
            return compute(self.norm, args[0] if args else next(iter(kwargs.values())), eps)


class _KeptChannels(TorchFunctionMode):
    """The norm's call over its kept channels (``F.layer_norm``'s and ``F.rms_norm``'s last dim, ``F.group_norm``'s dim 1); the removed ones are 0."""

    def __init__(self, channels: int, removed: torch.Tensor) -> None:
        super().__init__()
        self.channels, self.removed = channels, removed

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (F.layer_norm, F.group_norm, F.rms_norm):
            return func(*args, **kwargs)
        call = inspect.signature(func).bind(*args, **kwargs)  # positional or by name, as the norm's code calls it
        call.apply_defaults()
        x, weight, bias, eps = (call.arguments.get(name) for name in ("input", "weight", "bias", "eps"))
        if func is F.group_norm:
            dim, matches = 1, x.shape[1] == self.channels
        else:
            dim, matches = -1, tuple(call.arguments["normalized_shape"]) == (self.channels,)
        if not matches:
            return func(*args, **kwargs)
        kept = torch.nonzero(~self.removed).flatten().to(x.device)
        weight = None if weight is None else weight[kept]
        bias = None if bias is None else bias[kept]
        kept_x = x.index_select(dim, kept)
        if func is F.group_norm:
            groups = call.arguments["num_groups"]
            normed = F.group_norm(kept_x, len(kept) if groups == self.channels else groups, weight, bias, eps)
        elif func is F.rms_norm:
            normed = F.rms_norm(kept_x, (len(kept),), weight, eps)
        else:
            normed = F.layer_norm(kept_x, (len(kept),), weight, bias, eps)
        return x.new_zeros(x.shape).index_copy(dim, kept, normed)


def convertible(module: nn.Module) -> bool:
    """A LayerNorm or RMSNorm over one dimension (the channels a group prunes), a GroupNorm or a
    hand-written norm computing one of these (``standard_form``), not yet running ``LeaveOutRemoved``."""
    if maskable(module):
        return False
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return len(module.normalized_shape) == 1
    return isinstance(module, nn.GroupNorm) or standard_form(module) is not None


def channel_count(norm: nn.Module) -> int:
    """The channels a maskable norm normalises."""
    if isinstance(norm, nn.GroupNorm):
        return norm.num_channels
    return norm.normalized_shape[0] if isinstance(norm, (nn.LayerNorm, nn.RMSNorm)) else len(norm.weight)


def _rms_norm(norm: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (len(norm.weight),), norm.weight, eps)


def _unit_offset_rms_norm(norm: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm: its weight stores the scale's offset from 1."""
    return F.rms_norm(x, (len(norm.weight),), 1 + norm.weight, eps)


def _channels_first_rms_norm(norm: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    return _rms_norm(norm, x.movedim(1, -1), eps).movedim(-1, 1)


def _layer_norm(norm: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (len(norm.weight),), norm.weight, norm.bias, eps)


def _channels_first_layer_norm(norm: nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    return _layer_norm(norm, x.movedim(1, -1), eps).movedim(-1, 1)


# the standard norms a hand-written one may compute, by its parameters, with the probe input's channel dimension
STANDARD_FORMS: dict[tuple[str, ...], tuple[tuple[StandardForm, int], ...]] = {
    ("weight",): ((_rms_norm, -1), (_channels_first_rms_norm, 1), (_unit_offset_rms_norm, -1)),
    ("bias", "weight"): ((_layer_norm, -1), (_channels_first_layer_norm, 1)),
}


def standard_form(module: nn.Module) -> tuple[StandardForm, float] | None:
    """The standard norm (and its epsilon) a hand-written norm module computes, or None.

    A leaf module without buffers (nothing a probe call could update: a BatchNorm's running
    statistics) with a 1-D ``weight`` (and ``bias``) and a float epsilon attribute whose
    output equals the standard norm's, to 1e-5, on probe inputs of small variance (so that the
    epsilon counts) with its own weight and with a random one (so that a rescaled weight
    fails, unless the rescaling is a standard form: Gemma's ``1 + weight``). The probes run
    on a copy of the module: the user's is never called or touched.
    """
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or next(module.children(), None) is not None:
        return None
    if next(module.buffers(recurse=False), None) is not None:
        return None
    parameters = dict(module.named_parameters(recurse=False))
    forms = STANDARD_FORMS.get(tuple(sorted(parameters)))
    eps = next((value for name in EPS_NAMES if isinstance(value := getattr(module, name, None), float)), None)
    if forms is None or eps is None or any(p.dim() != 1 or p.shape != parameters["weight"].shape for p in parameters.values()):
        return None
    channels = len(parameters["weight"])
    generator = torch.Generator().manual_seed(0)
    own, probe = copy.deepcopy(module), copy.deepcopy(module)
    with torch.no_grad():
        for parameter in probe.parameters():
            parameter.copy_(torch.randn(channels, generator=generator))
    for compute, dim in forms:
        shape = [2, 3, 3]
        shape.insert(dim % 4, channels)
        x = torch.randn(shape, generator=generator) * 1e-2 + 1e-2
        if _computes(own, compute, eps, x) and _computes(probe, compute, eps, x):
            return compute, eps
    return None


def _computes(norm: nn.Module, compute: StandardForm, eps: float, x: torch.Tensor) -> bool:
    """Does ``norm`` (a probe copy) compute ``compute`` on ``x``?"""
    try:
        with torch.no_grad():
            out, expected = norm(x), compute(norm, x, eps)
    except Exception:  # a forward taking other arguments, or other shapes: not a norm of these
        return False
    return isinstance(out, torch.Tensor) and out.shape == expected.shape and torch.allclose(out.float(), expected.float(), rtol=1e-4, atol=1e-5)


def maskable(module: nn.Module) -> bool:
    """Does ``module`` run ``LeaveOutRemoved`` (a private copy's LayerNorm)?"""
    return isinstance(module.__dict__.get("forward"), LeaveOutRemoved)


def as_maskable(norm: nn.Module) -> nn.Module:
    """The same module, its forward run through ``LeaveOutRemoved`` (``plain_copy`` calls this on its own copy only)."""
    is_standard = isinstance(norm, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm))
    norm.forward = LeaveOutRemoved(norm, None if is_standard else standard_form(norm))
    return norm


class NormPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for ``nn.RMSNorm`` (it has none) and the hand-written norms ``standard_form`` recognises.

    Every parameter (weight, bias) is sliced along its last dimension, and a ``normalized_shape``
    the module keeps (``nn.RMSNorm``'s, timm's ``RmsNorm``'s, which its ``F.rms_norm`` call
    reads) follows: as a raw parameter, Torch-Pruning would slice the weight alone.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(self.get_out_channels(layer))) - set(int(i) for i in idxs))
        for name, parameter in list(layer.named_parameters(recurse=False)):
            setattr(layer, name, self._prune_parameter_and_grad(parameter, keep, parameter.dim() - 1))
        if isinstance(shape := getattr(layer, "normalized_shape", None), tuple):
            layer.normalized_shape = (*shape[:-1], len(keep))
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        shape = getattr(layer, "normalized_shape", None)
        return shape[-1] if isinstance(shape, tuple) else layer.weight.shape[-1]

    get_in_channels = get_out_channels


class GroupNormPruner(tp.pruner.function.GroupNormPruner):
    """Torch-Pruning's GroupNorm pruner, except that a norm of one channel per group keeps one group per channel."""

    def prune_out_channels(self, layer: nn.GroupNorm, idxs: Sequence[int]) -> nn.Module:
        per_channel = layer.num_groups == layer.num_channels
        super().prune_out_channels(layer, idxs)
        if per_channel:
            layer.num_groups = layer.num_channels
        return layer

    prune_in_channels = prune_out_channels


def norm_pruners(model: nn.Module) -> dict[type, tp.pruner.function.BasePruningFunc]:
    """``NormPruner`` for ``nn.RMSNorm`` and for the class of each hand-written norm the private copy made
    maskable; ``GroupNormPruner`` for each GroupNorm class (Torch-Pruning picks a pruner by exact class)."""
    hand_written = {type(m) for m in model.modules() if maskable(m) and m.forward.form is not None}
    group_norms = {type(m) for m in model.modules() if isinstance(m, nn.GroupNorm)}
    return {nn.RMSNorm: NormPruner(), **{kind: NormPruner() for kind in hand_written}, **{kind: GroupNormPruner() for kind in group_norms}}


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

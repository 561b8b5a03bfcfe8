"""Layers that transform their own weight in forward: the transform folded into the weight.

transformers' BiT (``WeightStandardizedConv2d``) and timm's BiT ResNetV2 and NFNets
(``StdConv2d``, ``ScaledStdConv2d``) standardize their weight at every call and convolve with
the result. Quantizing the stored weight then left the weight the conv really runs off the
lattice (a standardized 4-bit weight is not 4-bit), and the ONNX graph standardized the
dequantized weight at every inference: neither what the plan counted nor an integer kernel.

In eval mode such a transform depends on the weight alone, so it is computed once and
stored as the weight (``fold``), as deployment would, and the layer's forward then convolves
with its stored weight (``FoldedForward``): quantization, pruning and export act on the
weight that runs. Analysis finds these layers on the example input (``weight_transforms``:
the op a Conv/Linear runs is handed a tensor of its weight's shape that is not its weight);
the user's model keeps its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

LAYER_OPS = (F.conv1d, F.conv2d, F.conv3d, F.linear)
Folds = tuple[tuple[str, tuple[int, ...]], ...]
"""(layer path, the shape of one sample of its input) per layer whose weight transform is folded."""


def _weight_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return args[1] if len(args) > 1 else kwargs.get("weight")


def weight_transforms(model: nn.Module, example_input: torch.Tensor, layers: list[str]) -> Folds:
    """The ``layers`` of ``model`` whose own op runs on a transform of their weight, with their input sample shape."""
    wanted = {model.get_submodule(name): name for name in layers}
    running: list[tuple[nn.Module, tuple[int, ...]]] = []
    found: dict[str, tuple[int, ...]] = {}

    def enter(module, args):
        running.append((module, tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()))

    def leave(module, args, output):
        running.pop()

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in LAYER_OPS and running and running[-1][0] in wanted:
                module, shape = running[-1]
                weight = _weight_argument(args, kwargs)
                if weight is not module.weight and weight is not None and weight.shape == module.weight.shape:
                    found[wanted[module]] = shape
            return func(*args, **kwargs)

    handles = [nn.modules.module.register_module_forward_pre_hook(enter), nn.modules.module.register_module_forward_hook(leave)]
    try:
        with torch.no_grad(), Recorder():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(sorted(found.items()))


def fold(model: nn.Module, folds: Folds) -> nn.Module:
    """Store each layer's transformed weight as its weight and make it run that (a private copy); returns ``model``."""
    for name, shape in folds:
        layer = model.get_submodule(name)
        if isinstance(layer.__dict__.get("forward"), FoldedForward):
            continue
        captured: list[torch.Tensor] = []
        with torch.no_grad(), _Capture(layer, captured):
            type(layer).forward(layer, torch.zeros((1, *shape)))
        layer.weight.data.copy_(captured[0])
        layer.forward = FoldedForward(layer, shape)
    return model


def installed_folds(model: nn.Module) -> Folds:
    """The folds installed on ``model`` (what ``save_compressed`` records)."""
    return tuple((name, module.forward.shape) for name, module in model.named_modules()
                 if isinstance(module.__dict__.get("forward"), FoldedForward))


class FoldedForward:
    """A layer's own forward, its op handed the stored (folded) weight instead of the transform it computes."""

    def __init__(self, layer: nn.Module, shape: tuple[int, ...]) -> None:
        self.layer, self.shape = layer, tuple(shape)

    def __call__(self, *args, **kwargs):
        with _OwnWeight(self.layer):
            return type(self.layer).forward(self.layer, *args, **kwargs)


class _Capture(TorchFunctionMode):
    """Records the weight argument of ``layer``'s op."""

    def __init__(self, layer: nn.Module, captured: list[torch.Tensor]) -> None:
        super().__init__()
        self.layer, self.captured = layer, captured

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        weight = _weight_argument(args, kwargs) if func in LAYER_OPS else None
        if weight is not None and weight.shape == self.layer.weight.shape:
            self.captured.append(weight.detach().clone())
        return func(*args, **kwargs)


class _OwnWeight(TorchFunctionMode):
    """Hands ``layer``'s op its stored weight (under any parametrization) in place of the transform."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in LAYER_OPS:
            weight = _weight_argument(args, kwargs)
            if weight is not None and weight.shape == self.layer.weight.shape:
                if len(args) > 1:
                    args = (args[0], self.layer.weight, *args[2:])
                else:
                    kwargs = {**kwargs, "weight": self.layer.weight}
        return func(*args, **kwargs)

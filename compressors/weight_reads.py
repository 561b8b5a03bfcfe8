"""Forward code that runs a layer's weight other than through the layer's own op, rewired in private copies.

Two patterns of public model code, found on the example input (``weight_reads``) and rewired
in every private copy, so that every stage (probes, masks, pruning, quantization, recovery,
ONNX export) sees an ordinary layer running its own stored weight; the user's model keeps its
forward, and a saved model records both lists and reinstalls them on load.

- **Routes**: a parent reads a Linear's weight in its own forward code. torchvision's Swin
  computes attention as ``F.linear(x, self.qkv.weight, self.qkv.bias)`` in a free function,
  timm's BEiT/EVA as ``F.linear(x, self.qkv.weight, qkv_bias)``: the Linears never run, so
  their inputs could not be quantized and they were left fp32 (a third of a Swin's weights).
  The reader's forward now sends those calls through the layer (``RoutedForward``), the bias
  passed replacing the layer's.
- **Folds**: a layer transforms its own weight at every call. transformers' BiT
  (``WeightStandardizedConv2d``) and timm's ``StdConv2d``/``ScaledStdConv2d`` standardize it;
  quantizing the stored weight left the conv running a standardization of it, off the lattice
  the plan counted, and the ONNX graph standardized the dequantized weight at every inference.
  In eval mode the transform depends on the weight alone: it is computed once and stored as
  the weight, and the layer's op is handed that stored weight (``FoldedForward``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

LAYER_OPS = (F.conv1d, F.conv2d, F.conv3d, F.linear)
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # subclasses included: a weight-standardized conv is one
Routes = tuple[tuple[str, tuple[str, ...]], ...]
"""(reader module path, the reader-relative paths of the Linears it reads) per reader."""
Folds = tuple[tuple[str, tuple[int, ...]], ...]
"""(layer path, the shape of one sample of its input) per layer whose weight transform is folded."""


def _weight_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return args[1] if len(args) > 1 else kwargs.get("weight")


CONV_SETTINGS = ("stride", "padding", "dilation", "groups")
MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)  # `w @ x` arrives as Tensor.matmul


def _layer_call(func, args: tuple, kwargs: dict, by_weight: dict[int, nn.Module]) -> tuple[nn.Module, torch.Tensor, bool] | None:
    """``(layer, its input, whether it is transposed)`` when this call computes what ``layer`` would.

    ``F.linear`` or a conv handed a layer's weight (or a view of it of the same shape, as
    transformers' Mamba passes ``conv1d.weight.squeeze(1).unsqueeze(1)``), a conv only with the
    layer's own stride, padding, dilation, groups and bias; or ``weight @ x`` (Mamba's
    ``dt_proj.weight @ time_step``), which is the layer on ``x`` transposed, without its bias.
    """
    if func in MATMULS and len(args) == 2 and isinstance(args[1], torch.Tensor) and args[1].dim() >= 2:
        layer = by_weight.get(id(args[0]))
        return (layer, args[1], True) if type(layer) is nn.Linear else None
    if func not in LAYER_OPS:
        return None
    weight = _weight_argument(args, kwargs)
    if weight is None:
        return None
    layer = by_weight.get(id(weight)) or by_weight.get(id(weight._base))
    if layer is None or weight.shape != layer.weight.shape or (func is F.linear) != (type(layer) is nn.Linear):
        return None
    if func is not F.linear:
        given = dict(zip(("bias", *CONV_SETTINGS), args[2:]), **kwargs)
        defaults = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
        own = {name: getattr(layer, name) for name in CONV_SETTINGS}
        if given.get("bias") is not layer.bias or any(_as_tuple(given.get(k, defaults[k]), layer) != _as_tuple(own[k], layer)
                                                      for k in CONV_SETTINGS):
            return None
    return layer, args[0] if args else kwargs["input"], False


def _as_tuple(value, layer: nn.Module):
    return value if isinstance(value, (tuple, str)) or value is None else (value,) * (layer.weight.dim() - 2)


def weight_reads(model: nn.Module, example_input: torch.Tensor) -> tuple[Routes, Folds]:
    """The routes and folds of ``model``, from one forward pass on ``example_input``.

    A route: a call computing what a Linear or conv that never runs as a module would
    (``_layer_call``), while one ancestor of it (the reader) is the innermost module running. A
    fold: a Conv/Linear's own op handed a tensor of its weight's shape that is not its weight.
    """
    modules = dict(model.named_modules())
    names = {module: name for name, module in modules.items()}
    by_weight = {id(module.weight): module for module in modules.values() if type(module) in LAYERS}
    running: list[tuple[str, tuple[int, ...]]] = []  # (module path, the shape of one sample of its input)
    ran: set[str] = set()
    read: dict[str, set[str]] = {}
    folds: dict[str, tuple[int, ...]] = {}

    def enter(module, args):
        if module not in names:  # a module built on the fly (transformers' kernel wrappers): its caller stays the innermost
            running.append(running[-1] if running else ("", ()))
            return
        running.append((names[module], tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()))
        ran.add(running[-1][0])

    def leave(module, args, output):
        running.pop()

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            call = _layer_call(func, args, kwargs, by_weight) if running else None
            if call is not None and names[call[0]] != running[-1][0]:
                read.setdefault(names[call[0]], set()).add(running[-1][0])
            if func in LAYER_OPS and running:
                weight, (inner, shape) = _weight_argument(args, kwargs), running[-1]
                own = getattr(modules.get(inner), "weight", None) if isinstance(modules.get(inner), LAYERS) else None
                if isinstance(own, torch.Tensor) and weight is not own and weight is not None and weight.shape == own.shape:
                    folds[inner] = shape
            return func(*args, **kwargs)

    handles = [nn.modules.module.register_module_forward_pre_hook(enter), nn.modules.module.register_module_forward_hook(leave)]
    try:
        with torch.no_grad(), Recorder():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    routes: dict[str, list[str]] = {}
    for layer, readers in read.items():
        reader = next(iter(readers)) if len(readers) == 1 else None
        if layer in ran or reader is None or not (reader == "" or layer.startswith(reader + ".")):
            continue
        routes.setdefault(reader, []).append(layer[len(reader) + 1 :] if reader else layer)
    return tuple((reader, tuple(sorted(layers))) for reader, layers in sorted(routes.items())), tuple(sorted(folds.items()))


def rewire(model: nn.Module, routes: Routes = (), folds: Folds = ()) -> nn.Module:
    """Install ``routes`` and ``folds`` on ``model`` (a private copy: this changes forwards and folded weights); returns it."""
    for reader, layers in routes:
        module = model.get_submodule(reader)
        if not isinstance(module.__dict__.get("forward"), RoutedForward):
            module.forward = RoutedForward(module, layers)
    for name, shape in folds:
        layer = model.get_submodule(name)
        if isinstance(layer.__dict__.get("forward"), FoldedForward):
            continue
        captured: list[torch.Tensor] = []
        with torch.no_grad(), _Capture(layer, captured):
            type(layer).forward(layer, torch.zeros((1, *shape), device=layer.weight.device, dtype=layer.weight.dtype))
        layer.weight.data.copy_(captured[0])
        layer.forward = FoldedForward(layer, shape)
    return model


def installed(model: nn.Module) -> tuple[Routes, Folds]:
    """The routes and folds installed on ``model`` (what ``save_compressed`` records)."""
    forwards = [(name, module.__dict__.get("forward")) for name, module in model.named_modules()]
    return (tuple((name, forward.layers) for name, forward in forwards if isinstance(forward, RoutedForward)),
            tuple((name, forward.shape) for name, forward in forwards if isinstance(forward, FoldedForward)))


class RoutedForward:
    """A reader's own forward, with ``F.linear`` on its layers' weights run by those layers.

    Looked up by path at every call, so a layer that pruning or quantization replaced or
    resized is the one used. Weights are recognised by identity, so a parametrized weight
    (recovery's, ONNX export's) is computed once for the call (``_pinned_weights``).
    """

    def __init__(self, reader: nn.Module, layers: tuple[str, ...]) -> None:
        self.reader, self.layers = reader, tuple(layers)

    def __call__(self, *args, **kwargs):
        layers = [self.reader.get_submodule(name) for name in self.layers]
        with _pinned_weights(layers), _ThroughLayers({id(layer.weight): layer for layer in layers}):
            return type(self.reader).forward(self.reader, *args, **kwargs)


class FoldedForward:
    """A layer's own forward, its op handed the stored (folded) weight instead of the transform it computes."""

    def __init__(self, layer: nn.Module, shape: tuple[int, ...]) -> None:
        self.layer, self.shape = layer, tuple(shape)

    def __call__(self, *args, **kwargs):
        with _OwnWeight(self.layer):
            return type(self.layer).forward(self.layer, *args, **kwargs)


@contextlib.contextmanager
def _pinned_weights(layers: list[nn.Module]):
    """Each parametrized layer's weight computed once and returned by every read until exit.

    ``parametrize.cached`` does this too, but the ONNX tracer refuses it; a parametrized
    module has a class of its own, whose ``weight`` property is swapped for the call.
    """
    swapped = []
    for layer in layers:
        if parametrize.is_parametrized(layer, "weight"):
            value, cls = layer.weight, type(layer)
            swapped.append((cls, cls.__dict__["weight"]))
            cls.weight = property(lambda self, value=value: value)
    try:
        yield
    finally:
        for cls, original in swapped:
            cls.weight = original


class _ThroughLayers(TorchFunctionMode):
    """Sends a call that computes what a layer would (``_layer_call``) through the layer (its hooks, its quantizer).

    ``F.linear``'s ``bias`` replaces the layer's; ``weight @ x`` takes none.
    """

    def __init__(self, by_weight: dict[int, nn.Module]) -> None:
        super().__init__()
        self.by_weight = by_weight

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = _layer_call(func, args, kwargs, self.by_weight)
        if call is None:
            return func(*args, **kwargs)
        layer, x, transposed = call
        if transposed:
            out = layer(x.transpose(-1, -2))
            return (out if layer.bias is None else out - layer.bias).transpose(-1, -2)
        out = layer(x)
        if func is F.linear:
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if bias is not layer.bias:
                out = out if layer.bias is None else out - layer.bias
                out = out if bias is None else out + bias
        return out


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
        weight = _weight_argument(args, kwargs) if func in LAYER_OPS else None
        if weight is not None and weight.shape == self.layer.weight.shape:
            args, kwargs = ((args[0], self.layer.weight, *args[2:]), kwargs) if len(args) > 1 else (args, {**kwargs, "weight": self.layer.weight})
        return func(*args, **kwargs)

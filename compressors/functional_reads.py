"""Linear layers whose weights a parent reads in its own forward code, routed through the layers.

torchvision's Swin computes its attention as ``F.linear(x, self.qkv.weight, self.qkv.bias)``
inside a free function, and timm's BEiT and EVA as ``F.linear(x, self.qkv.weight, qkv_bias)``
with a bias built from their own parameters: the ``nn.Linear`` modules exist, but never run.
Hooks never fire on them, so their inputs could not be quantized, they had no positions to
price, and they were left fp32 and listed (a third of a Swin's weights).

Analysis finds such reads on the example input (``functional_reads``): the module running
when ``F.linear`` was handed a Linear's weight is its reader. The private copy then runs each
reader's forward under a mode that sends those calls through the layer itself
(``RoutedForward``), so every stage (probes, masks, pruning, quantization, recovery, ONNX
export) sees an ordinary layer. The reader's bias, when it passes one of its own, replaces the
layer's. The user's model is never changed; a saved model records its routes and reloads
them.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

Routes = tuple[tuple[str, tuple[str, ...]], ...]
"""(reader module path, the reader-relative paths of the Linears it reads) per reader."""


def functional_reads(model: nn.Module, example_input: torch.Tensor) -> Routes:
    """The routes of ``model``: Linears that never run as modules but whose weight ``F.linear`` is given.

    Only reads from inside an ancestor of the layer are routed (the layer is then reachable
    from the reader); any other read leaves the layer as it was (untouched and listed).
    """
    linears = {id(module.weight): name for name, module in model.named_modules() if type(module) is nn.Linear}
    names = {module: name for name, module in model.named_modules()}
    running: list[str] = []
    ran: set[str] = set()
    read: dict[str, set[str]] = {}

    def enter(module, args):
        running.append(names.get(module, ""))
        ran.add(running[-1])

    def leave(module, args, output):
        running.pop()

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.linear and running:
                layer = linears.get(id(args[1] if len(args) > 1 else kwargs.get("weight")))
                if layer is not None and layer != running[-1]:
                    read.setdefault(layer, set()).add(running[-1])
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
    return tuple((reader, tuple(sorted(layers))) for reader, layers in sorted(routes.items()))


def route(model: nn.Module, routes: Routes) -> nn.Module:
    """Install ``routes`` on ``model`` (a private copy: this changes its readers' ``forward``); returns it."""
    for reader, layers in routes:
        module = model.get_submodule(reader)
        if not isinstance(module.__dict__.get("forward"), RoutedForward):
            module.forward = RoutedForward(module, layers)
    return model


def installed_routes(model: nn.Module) -> Routes:
    """The routes installed on ``model`` (what ``save_compressed`` records)."""
    return tuple((name, module.forward.layers) for name, module in model.named_modules()
                 if isinstance(module.__dict__.get("forward"), RoutedForward))


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
    """Sends ``F.linear(x, layer.weight, bias)`` through ``layer`` (its hooks, its quantizer), ``bias`` in place of the layer's."""

    def __init__(self, by_weight: dict[int, nn.Linear]) -> None:
        super().__init__()
        self.by_weight = by_weight

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            layer = self.by_weight.get(id(args[1] if len(args) > 1 else kwargs.get("weight")))
            if layer is not None:
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                out = layer(args[0] if args else kwargs["input"])
                if bias is not layer.bias:
                    out = out if layer.bias is None else out - layer.bias
                    out = out if bias is None else out + bias
                return out
        return func(*args, **kwargs)

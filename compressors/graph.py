"""Model analysis: find the compressible units of any ``nn.Module`` with Torch-Pruning.

A unit is one Torch-Pruning dependency group, rooted at a layer's output channels: every
layer whose outputs are coupled to it (a residual stage's convs, a depthwise conv and its
producer) prunes the same channels. The analysis also records, per unit, exactly which
parameter slices those channels touch (``MaskTarget``), which is what search-mode masking
needs, and ranks channels by magnitude so search and export remove the same ones.

Every prunable unit is checked by trial at analysis time: one channel step is pruned for
real on a copy and the output is compared with the masked model's. A unit that fails
(e.g. attention q/k/v pruned by less than a head) is retried at coarser steps and, if
none works, kept as quantize-only with the reason recorded. So what we call prunable has
been shown to prune.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field, replace

import torch
import torch_pruning as tp
from torch import nn

from metacompress.compressors.spec import LayerSpec, ModelSpec, UnitSpec
from metacompress.errors import UnsupportedModel

log = logging.getLogger(__name__)

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
MASKABLE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Normalisations over the channel dimension: removing a channel changes every other
# channel's statistics, so masking (zeros) and pruning (removal) would disagree.
CHANNEL_MIXING_NORMS = (nn.LayerNorm, nn.GroupNorm)
KNOWN_PARAMETERISED = QUANTIZABLE + MASKABLE_NORMS + CHANNEL_MIXING_NORMS
EQUIVALENCE_TOL = 1e-4


@dataclass(frozen=True)
class MaskTarget:
    """The slice of one module's parameters that a unit's channels own.

    Args:
        module: module path.
        role: ``"out"`` (weight rows, bias, norm affine) or ``"in"`` (weight columns).
        indices: (C, k) long tensor: the module indices fed by each of the unit's C channels.
    """

    module: str
    role: str
    indices: torch.Tensor


@dataclass
class UnitGraph:
    """Per-unit internals that the spec leaves out: mask targets and channel ranking."""

    root: str
    targets: list[MaskTarget] = field(default_factory=list)
    # channels ordered least important first, in whole steps
    removal_order: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def removed_channels(self, unit: UnitSpec, kept: int) -> torch.Tensor:
        """The channel indices a plan keeping ``kept`` channels removes."""
        return self.removal_order[: unit.channels - kept]


@dataclass
class ModelGraph:
    """``ModelSpec`` plus what masking and export need to act on the model."""

    spec: ModelSpec
    units: list[UnitGraph]


def analyze(
    model: nn.Module,
    example_input: torch.Tensor,
    frozen: tuple[str, ...] | list[str] = (),
) -> ModelSpec:
    """Find the compressible units of ``model``; the model itself is not modified.

    Args:
        model: any module built from Conv1d/Conv2d/Linear layers (others are left alone).
        example_input: a batch the model accepts, e.g. (N, C, H, W).
        frozen: module paths never to prune and to keep at 8 bits; the layer producing the
            model output (the classifier head) is always frozen.

    Returns:
        The model's ``ModelSpec`` (printable as a table; ``.to_frame()`` for pandas).

    Raises:
        UnsupportedModel: non-finite weights, an input the model rejects, no compressible
            layer, or a frozen name that is not a module.
    """
    return build_graph(model, example_input, frozen).spec


def build_graph(model: nn.Module, example_input: torch.Tensor, frozen=()) -> ModelGraph:
    """Analyse ``model`` (a private deep copy of it) into a ``ModelGraph``."""
    check_finite(model)
    work = copy.deepcopy(model).eval()
    names = {module: name for name, module in work.named_modules()}
    unknown = [f for f in frozen if f not in dict(work.named_modules())]
    if unknown:
        raise UnsupportedModel(f"frozen layer(s) {unknown} are not modules of this model; use names from model.named_modules()")
    positions, order = _trace_layers(work, example_input)
    if not order:
        raise UnsupportedModel(
            "the model has no compressible layer: metacompress compresses Conv1d, Conv2d and Linear layers "
            "that run in forward(); found none"
        )
    unsupported = _unsupported_modules(work, set(order))
    ignored = [work.get_submodule(n) for n, _ in unsupported]
    graph = dependency_graph(work, example_input, ignored)

    units: list[UnitSpec] = []
    unit_graphs: list[UnitGraph] = []
    layer_unit: dict[str, int] = {}
    in_links: dict[str, list[tuple[int, int]]] = {name: [] for name in order}
    fp32_in_units = 0
    for name in order:
        if name in layer_unit:
            continue
        index = len(units)
        module = work.get_submodule(name)
        group_info = _group_of(graph, module, names)
        unit, unit_graph = _make_unit(index, name, module, group_info, set(frozen), unsupported, work)
        for layer_name in unit.layers:
            layer_unit[layer_name] = index
        for target in unit_graph.targets:
            if target.role == "in" and target.module in in_links:
                in_links[target.module].append((index, target.indices.shape[1]))
        fp32_in_units += unit.fp32_per_channel * unit.channels
        units.append(unit)
        unit_graphs.append(unit_graph)

    layers = [_layer_spec(work.get_submodule(n), n, positions[n], layer_unit[n], in_links[n]) for n in order]
    total_params = sum(p.numel() for p in work.parameters())
    layer_params = sum(l.weight_count(l.in_channels, l.out_channels) + l.out_channels * l.has_bias for l in layers)
    spec = ModelSpec(
        units=tuple(units),
        layers=tuple(layers),
        input_shape=tuple(example_input.shape[1:]),
        fixed_fp32_params=total_params - layer_params - fp32_in_units,
        unsupported=tuple(unsupported),
        total_params=total_params,
    )
    model_graph = ModelGraph(spec, unit_graphs)
    return _verify_pruning(model, example_input, model_graph)


def dependency_graph(model: nn.Module, example_input: torch.Tensor, ignored: list[nn.Module] = ()) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model`` (traced with autograd, so never under no_grad)."""
    with warnings.catch_warnings():
        # raw nn.Parameters are handled: a group holding one is marked unprunable
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, ignored_layers=list(ignored))


def check_finite(model: nn.Module) -> None:
    """Raise ``UnsupportedModel`` naming every parameter or buffer with NaN or inf."""
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UnsupportedModel(f"non-finite values (NaN or inf) in {', '.join(bad)}; fix or retrain the model before compressing it")


def expected_input_hint(model: nn.Module) -> str:
    """What the model's first layer expects, to name it in input-shape errors."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"the first layer {name!r} is Conv2d(in_channels={module.in_channels}): it expects input of shape (N, {module.in_channels}, H, W)"
        if isinstance(module, nn.Conv1d):
            return f"the first layer {name!r} is Conv1d(in_channels={module.in_channels}): it expects input of shape (N, {module.in_channels}, L)"
        if isinstance(module, nn.Linear):
            return f"the first layer {name!r} is Linear(in_features={module.in_features}): it expects input of shape (N, ..., {module.in_features})"
    return "check the model's expected input shape"


def _trace_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Run the example once; record quantizable layers in call order and their positions."""
    positions: dict[str, tuple[int, int]] = {}
    order: list[str] = []

    def hook(module, inputs, output, name):
        if name in positions:
            return  # a layer called twice (weight sharing) is priced once
        x = inputs[0]
        channel_dim = 1 if isinstance(module, (nn.Conv1d, nn.Conv2d)) else -1
        per_in = x.numel() // (x.shape[0] * x.shape[channel_dim])
        per_out = output.numel() // (output.shape[0] * output.shape[channel_dim])
        positions[name] = (per_in, per_out)
        order.append(name)

    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
        for n, m in model.named_modules()
        if isinstance(m, QUANTIZABLE)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    except Exception as exc:  # the model's own error, re-raised with the shape it expects
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise UnsupportedModel(f"the model rejects the example input of shape {shape}: {exc}. {expected_input_hint(model)}") from exc
    finally:
        for h in handles:
            h.remove()
    return positions, order


def _unsupported_modules(model: nn.Module, executed: set[str]) -> list[tuple[str, str]]:
    """Parameterised layers metacompress leaves untouched (listed, never a crash).

    These are torch layer types it does not compress (Embedding, LSTM, ConvTranspose,
    MultiheadAttention, ...) and Conv/Linear modules that forward() never calls. Raw
    ``nn.Parameter``s of the user's own modules (positional embeddings, class tokens) are
    not layers: they stay fp32 and are counted in the model size.
    """
    found = []
    for name, module in model.named_modules():
        has_own_params = any(True for _ in module.parameters(recurse=False))
        if not has_own_params or not type(module).__module__.startswith("torch."):
            continue
        if isinstance(module, QUANTIZABLE) and name in executed:
            continue
        if isinstance(module, KNOWN_PARAMETERISED) and not isinstance(module, QUANTIZABLE):
            continue
        found.append((name, type(module).__name__))
    return found


@dataclass
class _GroupInfo:
    out_layers: list[str]
    targets: list[MaskTarget]
    problems: list[str]
    fp32_per_channel: int
    channels: int


def _group_of(graph: tp.DependencyGraph, module: nn.Module, names: dict[nn.Module, str]) -> _GroupInfo:
    """The dependency group rooted at ``module``'s output channels, as mask targets."""
    pruner = graph.get_pruner_of_module(module)
    channels = pruner.get_out_channels(module)
    group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
    out_layers, targets, problems, fp32 = [], [], [], 0
    for item in group.items:
        target = item.dep.target.module
        if not isinstance(target, nn.Module) or target not in names:
            if isinstance(target, nn.Parameter):
                problems.append("it owns an unwrapped nn.Parameter")
            continue
        name = names[target]
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        idxs = [int(i) for i in item.idxs]
        if not any(True for _ in target.parameters(recurse=False)):
            continue
        if len(idxs) % channels:
            problems.append(f"{name} maps channels unevenly")
            continue
        indices = torch.tensor(idxs, dtype=torch.long).reshape(channels, -1)
        if isinstance(target, QUANTIZABLE):
            depthwise = isinstance(target, (nn.Conv1d, nn.Conv2d)) and target.groups == target.out_channels == target.in_channels and target.groups > 1
            if isinstance(target, (nn.Conv1d, nn.Conv2d)) and target.groups > 1 and not depthwise:
                problems.append(f"{name} is a grouped conv")
            if is_out and name not in out_layers:
                out_layers.append(name)
            targets.append(MaskTarget(name, "out" if is_out or depthwise else "in", indices))
        elif isinstance(target, MASKABLE_NORMS):
            fp32 += 2 * indices.shape[1] if target.affine else 0
            targets.append(MaskTarget(name, "out", indices))
        elif isinstance(target, CHANNEL_MIXING_NORMS):
            problems.append(f"{name} ({type(target).__name__}) normalises across these channels")
            fp32 += sum(p.numel() for p in target.parameters(recurse=False)) // channels
        else:
            problems.append(f"{name} ({type(target).__name__}) is not supported")
    return _GroupInfo(out_layers, targets, problems, fp32, channels)


def _make_unit(index, name, module, info: _GroupInfo, frozen: set[str], unsupported, model) -> tuple[UnitSpec, UnitGraph]:
    layers = info.out_layers or [name]
    consumers = [t for t in info.targets if t.role == "in"]
    reasons = list(dict.fromkeys(info.problems))
    is_frozen = any(l in frozen for l in layers) or not consumers
    if not consumers:
        reasons.insert(0, "its output is the model output (classifier head)")
    elif is_frozen:
        reasons.insert(0, "frozen by the user")
    prunable = not reasons
    unit = UnitSpec(
        index=index,
        name=layers[0] + (f"+{len(layers) - 1}" if len(layers) > 1 else ""),
        layers=tuple(layers),
        channels=info.channels,
        prunable=prunable,
        frozen=is_frozen,
        reason="; ".join(reasons),
        fp32_per_channel=info.fp32_per_channel,
    )
    graph = UnitGraph(root=name, targets=info.targets)
    if prunable:
        graph.removal_order = _rank_channels(model, info, 1)
    return unit, graph


def _rank_channels(model: nn.Module, info: _GroupInfo, step: int) -> torch.Tensor:
    """Channels least important first, removed in whole blocks of ``step``.

    Importance is the L2 norm of each channel's output weights, normalised per layer so
    large and small layers of a group count equally (Torch-Pruning's group magnitude).
    """
    score = torch.zeros(info.channels, dtype=torch.float64)
    for target in info.targets:
        if target.role != "out":
            continue
        layer = model.get_submodule(target.module)
        if not isinstance(layer, QUANTIZABLE):
            continue
        rows = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)[target.indices.flatten()]
        norms = rows.norm(dim=1).reshape(info.channels, -1).sum(dim=1)
        score += norms / norms.mean().clamp_min(1e-12)
    blocks = score.reshape(-1, step).sum(dim=1)
    order = torch.argsort(blocks, stable=True)
    return (order[:, None] * step + torch.arange(step)).flatten()


def _layer_spec(module: nn.Module, name: str, positions: tuple[int, int], unit: int, in_units: list[tuple[int, int]]) -> LayerSpec:
    if isinstance(module, nn.Linear):
        kind, cin, cout, kernel, stride, groups = "linear", module.in_features, module.out_features, (), 1, 1
    else:
        cin, cout, groups = module.in_channels, module.out_channels, module.groups
        kind = "depthwise" if groups == cin == cout and groups > 1 else "conv"
        kernel, stride = tuple(module.kernel_size), module.stride[0]
    if kind == "depthwise":
        in_units = [(unit, 1)]
    links = tuple(dict.fromkeys(in_units))
    return LayerSpec(
        name=name,
        kind=kind,
        in_channels=cin,
        out_channels=cout,
        kernel_size=kernel,
        stride=stride,
        groups=groups,
        in_positions=positions[0],
        out_positions=positions[1],
        has_bias=module.bias is not None,
        unit=unit,
        in_units=links,
    )


def _verify_pruning(model: nn.Module, example_input: torch.Tensor, graph: ModelGraph) -> ModelGraph:
    """Trial-prune each prunable unit by one step; coarsen or disable units that fail."""
    spec = graph.spec
    reference = copy.deepcopy(model).eval()
    units = list(spec.units)
    candidates = [(u, g) for u, g in zip(spec.units, graph.units) if u.prunable]
    one_step = [g.removed_channels(u, u.channels - 1) for u, g in candidates]
    if _prunes_consistently(reference, example_input, [g for _, g in candidates], one_step):
        candidates = []  # every unit prunes channel by channel: the common case, one trial
    for unit, unit_graph in candidates:
        for step in _divisors(unit.channels):
            if step == unit.channels:
                units[unit.index] = replace(unit, prunable=False, reason="no channel step prunes it consistently")
                break
            trial_unit = replace(unit, channel_step=step)
            info = _GroupInfo(list(unit.layers), unit_graph.targets, [], 0, unit.channels)
            unit_graph.removal_order = _rank_channels(reference, info, step)
            removed = unit_graph.removed_channels(trial_unit, unit.channels - step)
            if _prunes_consistently(reference, example_input, [unit_graph], [removed]):
                units[unit.index] = trial_unit
                break
    final_spec = ModelSpec(
        units=tuple(units),
        layers=_with_in_fixed(spec, units),
        input_shape=spec.input_shape,
        fixed_fp32_params=spec.fixed_fp32_params,
        unsupported=spec.unsupported,
        total_params=spec.total_params,
    )
    return ModelGraph(final_spec, graph.units)


def _prunes_consistently(model, example_input, unit_graphs: list[UnitGraph], removed: list[torch.Tensor]) -> bool:
    """Do masking and real pruning of these channels give the same output?"""
    from metacompress.compressors.export import prune_units
    from metacompress.compressors.masking import mask_unit

    masked = copy.deepcopy(model)
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for unit_graph, channels in zip(unit_graphs, removed):
            mask_unit(masked, unit_graph, channels)
    try:
        prune_units(pruned, example_input, [(g.root, r) for g, r in zip(unit_graphs, removed)])
        with torch.no_grad():
            expected, actual = masked(example_input), pruned(example_input)
    except Exception as exc:  # Torch-Pruning could not follow this group at this step
        log.debug("trial prune of %s failed: %s", [g.root for g in unit_graphs], exc)
        return False
    scale = expected.abs().max().clamp_min(1.0)
    return expected.shape == actual.shape and bool(((expected - actual).abs().max() / scale) < EQUIVALENCE_TOL)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _with_in_fixed(spec: ModelSpec, units: list[UnitSpec]) -> tuple[LayerSpec, ...]:
    """Fill each layer's ``in_fixed``: input features no unit prunes (e.g. image channels)."""
    out = []
    for layer in spec.layers:
        fed = sum(units[u].channels * k for u, k in layer.in_units)
        out.append(replace(layer, in_fixed=layer.in_channels - fed))
    return tuple(out)

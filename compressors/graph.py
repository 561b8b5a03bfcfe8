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
been shown to prune (``surgery.verify_units``).

Analysis never fails on one group: whatever Torch-Pruning cannot follow (an exception in
its index mapping, e.g. through a GRU; indices past a layer's size after a transpose) is
that unit's reason for being quantize-only, and every parameter slice belongs to one unit
only, so overlapping groups (channels split by a concat and joined again) are never
counted or pruned twice. A grouped conv's channels are pruned the same positions in every
group at once (Torch-Pruning's convention), so its units' step is a multiple of its groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.func import functional_call

from metacompress.compressors.attention import explicit_attention_layers
from metacompress.compressors.embedding_table import OutputMajorEmbedding
from metacompress.compressors.recovery import output_tensors
from metacompress.compressors.spec import LayerSpec, ModelSpec, UnitSpec
from metacompress.compressors.groups import KNOWN_PARAMETERISED, GroupInfo, attention_group, claim, few_names, group_of, untraced_group
from metacompress.compressors.weight_reads import rewire, weight_reads
from metacompress.compressors.surgery import (
    CONVS, QUANTIZABLE, UnitGraph, dependency_graph, plain_copy, rank_channels, rewritten_layers, verify_units,
)
from metacompress.errors import UnsupportedModel

log = logging.getLogger(__name__)

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
        model: any module built from Conv1d/Conv2d/Conv3d/Linear layers (others are left alone).
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
    check_model(model)
    work = plain_copy(model).eval()
    names = {module: name for name, module in work.named_modules()}
    unknown = [f for f in frozen if f not in dict(work.named_modules())]
    if unknown:
        raise UnsupportedModel(f"frozen layer(s) {unknown} are not modules of this model; use names from model.named_modules()")
    try:
        positions, order, outputs = _trace_layers(work, example_input)
    except UnsupportedModel as exc:
        raise _copy_defect(model, example_input, exc) or exc
    routes, folds = weight_reads(work, example_input)
    if folds:
        folds = _equivalent_folds(model, work, example_input, folds)
    if routes or folds:  # the layers a parent reads in its forward code now run, and are traced with the rest
        positions, order, outputs = _trace_layers(rewire(work, routes, folds), example_input)
    tied, head_tables = _tied_weights(work)
    ran_in_eval = set(order)
    order = [name for name in order if name not in tied and name not in head_tables]
    if not order:
        raise UnsupportedModel(
            "the model has no compressible layer: metacompress compresses Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and "
            "Embedding layers (and LSTM, GRU and MultiheadAttention, as Linears) that run in forward(); found none"
        )
    unsupported = [(name, tied.get(name, kind)) for name, kind in _unsupported_modules(work, set(order)) if name not in head_tables]
    ignored = [work.get_submodule(n) for n, _ in unsupported] + [work.get_submodule(n) for n in head_tables]
    graph, untraced = None, ""
    training_only = _training_only_layers(work, example_input, ran_in_eval)  # a tied LM head runs in both modes
    if training_only:
        untraced = (f"layers {few_names(training_only)} run only in training mode (auxiliary heads), so pruning the layers "
                    "feeding them would break the fine-tune; nothing is pruned. Build the model without them to prune it "
                    "(torchvision: aux_logits=False)")
    else:
        try:
            graph = dependency_graph(work, example_input, ignored)
        except Exception as exc:  # noqa: BLE001 (Torch-Pruning's tracer fails in many ways on graphs it does not model)
            untraced = f"Torch-Pruning cannot trace this model ({type(exc).__name__}: {exc}), so nothing is pruned"
            if type(model).__module__.startswith("transformers."):  # the one cause seen there: GPT-2's returned cache
                untraced += "; a model that also returns its key/value cache traces without it (config use_cache=False)"
    if graph is None:
        log.warning("%s; every layer is its own quantize-only unit", untraced)

    units: list[UnitSpec] = []
    unit_graphs: list[UnitGraph] = []
    layer_unit: dict[str, int] = {}
    in_links: dict[str, list[tuple[int, int]]] = {name: [] for name in order}
    out_per_channel: dict[str, int] = {}
    claimed: dict[tuple[str, str], tuple[set[int], int]] = {}
    fp32_in_units = 0
    explicit = explicit_attention_layers(work)  # attention whose heads Torch-Pruning cannot map
    for name in order:
        if name in layer_unit:
            continue
        index = len(units)
        module = work.get_submodule(name)
        if graph is None:
            group_info = untraced_group(module, name, untraced)
        elif name in explicit:
            group_info = attention_group(work, explicit[name])
        else:
            group_info = group_of(graph, module, name, names)
        untying = sorted({t.module for t in group_info.targets if t.module in head_tables.values() and t.role == "in"})
        if untying:  # the table and its head would lose their columns as two tensors
            group_info.problems.append(f"its channels are the columns of an embedding table tied to {', '.join(untying)}")
        claim(group_info, claimed, index, set(layer_unit) - {name})
        unit, unit_graph = _make_unit(index, name, group_info, set(frozen), outputs, work)
        for layer_name in unit.layers:
            layer_unit[layer_name] = index
        for target in unit_graph.targets:
            if target.role == "in" and target.module in in_links:
                in_links[target.module].append((index, target.indices.shape[1]))
            elif target.role == "out" and target.module in unit.layers:
                out_per_channel[target.module] = target.indices.shape[1]
        fp32_in_units += unit.fp32_per_channel * unit.channels
        units.append(unit)
        unit_graphs.append(unit_graph)

    layers = [_layer_spec(work.get_submodule(n), n, positions[n], layer_unit[n], in_links[n], out_per_channel.get(n, 1)) for n in order]
    total_params = sum(p.numel() for p in work.parameters())
    layer_params = sum(l.weight_count(l.in_channels, l.out_channels) + l.out_channels * l.has_bias for l in layers)
    spec = ModelSpec(
        units=tuple(units),
        layers=tuple(layers),
        input_shape=tuple(example_input.shape[1:]),
        fixed_fp32_params=total_params - layer_params - fp32_in_units,
        unsupported=tuple(unsupported),
        total_params=total_params,
        routes=routes,
        folds=folds,
    )
    model_graph = ModelGraph(spec, unit_graphs)
    return _verify_pruning(model, example_input, model_graph)


def check_model(model: nn.Module) -> None:
    """Raise ``UnsupportedModel`` for a model no stage can work on, before any work.

    A TorchScript module or a ``torch.compile`` wrapper hides its layers behind compiled
    code (it would analyse as "no compressible layer"); float64/float16 weights would meet
    the float32 calibration data and quantizers deep inside the first evaluation; NaN or inf weights make every score NaN.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModel("the model is a TorchScript module (torch.jit.script/trace output), whose layers analysis "
                               "cannot see; pass the nn.Module it was scripted from")
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"the model is a {type(model).__name__}, not a torch.nn.Module")
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):  # its forward runs compiled code: no layer hook fires
        raise UnsupportedModel("the model is a torch.compile wrapper, whose compiled forward hides its layers from analysis; "
                               "pass the module it wraps (model._orig_mod) and compile the compressed model afterwards")
    lazy = [n for n, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        raise UnsupportedModel(f"the model has uninitialized lazy parameters ({', '.join(lazy[:3])}): a Lazy* layer gets its shape "
                               "from its first forward; run a batch through the model and train it before compressing")
    dtypes = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()} - {str(torch.float32)})
    if dtypes:
        raise UnsupportedModel(f"the model has {', '.join(dtypes)} parameters; metacompress calibrates and simulates its "
                               "integer kernels in float32: pass a float32 copy (copy.deepcopy(model).float())")
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UnsupportedModel(f"non-finite values (NaN or inf) in {', '.join(bad)}; fix or retrain the model before compressing it")


def forward_example(model: nn.Module, example_input: torch.Tensor):
    """``model(example_input)``; the model's own error re-raised as ``UnsupportedModel`` with the input it expects."""
    try:
        return model(example_input)
    except Exception as exc:  # noqa: BLE001 (any error of the user's forward means "this input does not fit")
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        several = " metacompress calls model(x) with one tensor: wrap a model of several inputs in a module whose forward(x) builds them." if isinstance(exc, TypeError) else ""
        integers = (" The inputs are integers, which only an nn.Embedding reads (they are kept as token ids): pass float32 "
                    "inputs, e.g. images as x.astype('float32') / 255."
                    if isinstance(example_input, torch.Tensor) and not example_input.is_floating_point() else "")
        raise UnsupportedModel(f"the model rejects the example input of shape {shape}: {exc}. {expected_input_hint(model)}.{several}{integers}") from exc


def eval_output(model: nn.Module, example_input: torch.Tensor):
    """``model``'s output on ``example_input`` in eval mode without gradients; the model keeps the modes it had."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            return model.eval()(example_input)
    finally:
        for module, training in modes:
            module.training = training


def _copy_defect(model: nn.Module, example_input: torch.Tensor, exc: UnsupportedModel) -> UnsupportedModel | None:
    """The error to raise when the private copy fails on an input the user's model runs: the copy is at fault, not the input.

    None when the user's model fails too (the input is the problem, as ``exc`` says).
    """
    try:
        eval_output(model, example_input)
    except Exception:  # noqa: BLE001 (the user's own forward rejects it: exc names the input)
        return None
    rewritten = rewritten_layers(model)
    return UnsupportedModel(
        f"the model runs the example input, but metacompress's private copy of it does not ({exc.__cause__ or exc}); the copy "
        f"differs in {few_names(rewritten) if rewritten else 'its folded weight norms'}, rewritten as plain layers. This is a "
        "metacompress defect: please report it with the model's code"
    )


def expected_input_hint(model: nn.Module) -> str:
    """What the model's first layer expects, to name it in input-shape errors."""
    for name, module in model.named_modules():
        if isinstance(module, CONVS):
            dims = ("L", "H, W", "D, H, W")[len(module.kernel_size) - 1]
            return (f"the first layer {name!r} is {type(module).__name__}(in_channels={module.in_channels}): "
                    f"it expects input of shape (N, {module.in_channels}, {dims})")
        if isinstance(module, nn.Linear):
            return f"the first layer {name!r} is Linear(in_features={module.in_features}): it expects input of shape (N, ..., {module.in_features})"
    return "check the model's expected input shape"


def _trace_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[dict[str, tuple[int, int]], list[str], set[str]]:
    """Run the example once: quantizable layers in call order, their positions, and the
    layers whose output is (a view of) a model output tensor (or the last layer run).

    A layer called several times (ALBERT's shared encoder layer, a conv reused across scales,
    TabNet's shared GLU steps) does its work at every call: its positions are summed over the
    calls, so MACs, BitOps, latency and energy count each call (its weights, once).
    """
    positions: dict[str, tuple[int, int]] = {}
    order: list[str] = []
    produced: dict[str, list[torch.Tensor]] = {}  # held until compared, so no freed buffer is reused by the output

    def hook(module, inputs, output, name):
        x = inputs[0]
        channel_dim = 1 if isinstance(module, CONVS) else -1
        per_in = x.numel() // (x.shape[0] * x.shape[channel_dim]) if x.is_floating_point() else x.numel() // x.shape[0]  # ids: one per position
        per_out = output.numel() // (output.shape[0] * output.shape[channel_dim])
        earlier_in, earlier_out = positions.get(name, (0, 0))
        positions[name] = (earlier_in + per_in, earlier_out + per_out)
        if name not in produced:
            order.append(name)
        produced.setdefault(name, []).append(output)

    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
        for n, m in model.named_modules()
        if isinstance(m, QUANTIZABLE)
    ]
    try:
        with torch.enable_grad():  # the autograd graph shows which layers feed an output through an activation
            result = forward_example(model, example_input)
    finally:
        for h in handles:
            h.remove()
    returned = output_tensors(result)
    pointers = {t.data_ptr() for t in returned}
    outputs = {name for name, tensors in produced.items() if any(t.data_ptr() in pointers for t in tensors)} | set(order[-1:])
    return positions, order, outputs | _layers_behind(returned, produced)


OUTPUT_PASS_THROUGH = ("Softmax", "LogSoftmax", "Sigmoid", "Tanh", "View", "UnsafeView", "Reshape", "ReshapeAlias",
                       "Permute", "Transpose", "Clone", "Squeeze", "Unsqueeze", "Contiguous")
"""Autograd ops a model output may pass through after its layer and still be that layer's output (a head)."""


def _layers_behind(returned: list[torch.Tensor], produced: dict[str, list[torch.Tensor]]) -> set[str]:
    """Layers whose output reaches a returned tensor through activations and reshapes only.

    Why: a head followed by a softmax or sigmoid (MTCNN's face probability beside its box
    regression) is a model output too: it must be kept whole at 8 bits like any head, but
    its returned tensor is the activation's, not the layer's.
    """
    by_node = {t.grad_fn: name for name, tensors in produced.items() for t in tensors if t.grad_fn is not None}
    stack = [t.grad_fn for t in returned if t.grad_fn is not None]
    seen, found = set(), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in by_node:
            found.add(by_node[node])
        elif node.name().rstrip("0123456789").removesuffix("Backward") in OUTPUT_PASS_THROUGH:
            stack.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    return found


def _equivalent_folds(model: nn.Module, work: nn.Module, example_input: torch.Tensor, folds: tuple) -> tuple:
    """``folds`` if folding them leaves the outputs as they were; none if a transform depended on the input (logged)."""
    folded = rewire(plain_copy(model), folds=folds)
    before, after = output_tensors(eval_output(work, example_input)), output_tensors(eval_output(folded, example_input))
    if all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(before, after)):
        return folds
    log.warning("layers %s transform their weight with their input: left as they are", few_names([name for name, _ in folds]))
    return ()


def _training_only_layers(model: nn.Module, example_input: torch.Tensor, in_eval: set[str]) -> list[str]:
    """Quantizable layers that one training-mode forward runs and the eval-mode trace did not.

    Why: analysis traces eval mode, but the fine-tune runs training mode, where GoogLeNet's and
    Inception v3's auxiliary classifiers read the trunk's channels: pruning those channels
    would break them. A model whose training forward fails here is left to the fine-tune.
    """
    ran: set[str] = set()
    handles = [module.register_forward_hook(lambda *_, name=name: ran.add(name))
               for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)]
    # training mode updates BatchNorm statistics in place: the call gets copies of the buffers, not the parameters
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model.train()
    try:
        with torch.no_grad():
            functional_call(model, buffers, (example_input,))
    except Exception:  # noqa: BLE001 (e.g. BatchNorm refusing a batch of one in training mode)
        pass
    finally:
        model.eval()
        for handle in handles:
            handle.remove()
    return sorted(ran - in_eval)


def _tied_weights(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Quantizable layers whose weight is one tensor with another module's: ``{layer: description}``,
    and the embedding tables that read a tied LM head's weight: ``{table: head}``.

    A language model's head tied to its embedding tables is a layer like any other: quantized
    per output channel, i.e. per vocabulary row, which is exactly what a table lookup reads, so
    the tables read the head's codes (they are not layers; the tensor is counted once, at the
    head's bits). Any other tie (two convs, a table tied to a table) keeps the shared tensor
    fp32: pruning or quantizing one would silently change the other.
    """
    holders: dict[int, dict[int, str]] = {}  # parameter -> {owning module: its first path}
    for name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module.named_parameters(recurse=False, remove_duplicate=False):
            holders.setdefault(id(param), {}).setdefault(id(module), f"{name}.{attr}" if name else attr)
    modules = dict(model.named_modules())
    tied: dict[str, str] = {}
    head_tables: dict[str, str] = {}
    for name, module in modules.items():  # one module registered under two paths is shared, not tied
        others = [path for owner, path in holders.get(id(getattr(module, "weight", None)), {}).items() if owner != id(module)]
        if not isinstance(module, QUANTIZABLE + (nn.Embedding,)) or not others:  # a tied table is not rewritten, so still nn.Embedding
            continue
        sharers = [modules.get(path.rpartition(".")[0]) for path in others]
        pair = {type(module), type(sharers[0])} == {nn.Linear, nn.Embedding} and len(sharers) == 1 and others[0].endswith(".weight")
        if pair and getattr(module, "max_norm", None) is None and getattr(sharers[0], "max_norm", None) is None:  # max_norm renorms rows in place
            if type(module) is nn.Linear:
                continue  # an LM head
            head_tables[name] = others[0].rpartition(".")[0]
            continue
        tied[name] = f"{type(module).__name__}, weight tied to {', '.join(others)}"
    return tied, head_tables


def _unsupported_modules(model: nn.Module, executed: set[str]) -> list[tuple[str, str]]:
    """Parameterised layers metacompress leaves untouched (listed, never a crash).

    These are torch layer types it does not compress (an Embedding with ``max_norm``, an EmbeddingBag,
    attention ``SplitAttention`` cannot reproduce, ...) and Conv/Linear modules that
    forward() never calls. Raw
    ``nn.Parameter``s of the user's own modules (positional embeddings, class tokens) are
    not layers: they stay fp32 and are counted in the model size.
    """
    found = []
    for name, module in model.named_modules():
        has_own_params = any(True for _ in module.parameters(recurse=False))
        if not has_own_params or not (type(module).__module__.startswith("torch.") or isinstance(module, QUANTIZABLE)):
            continue
        if isinstance(module, QUANTIZABLE) and name in executed:
            continue
        if isinstance(module, KNOWN_PARAMETERISED) and not isinstance(module, QUANTIZABLE):
            continue
        found.append((name, type(module).__name__))
    return found


def _make_unit(index: int, name: str, info: GroupInfo, frozen: set[str], outputs: set[str], model: nn.Module) -> tuple[UnitSpec, UnitGraph]:
    """A unit from one group: prunable unless a problem, the model output or the user says otherwise."""
    # its own channels left the group (they map unevenly onto themselves through a shuffle):
    # the layer stands alone, and the group's other layers become units of their own
    layers = info.out_layers if name in info.out_layers else [name]
    consumers = [t for t in info.targets if t.role == "in"]
    reasons = list(dict.fromkeys(info.problems))
    is_head = not consumers and any(l in outputs for l in layers)
    is_frozen = is_head or any(l in frozen for l in layers)
    if is_head:
        reasons.insert(0, "its output is the model output (classifier head)")
    elif is_frozen:
        reasons.insert(0, "frozen by the user")
    elif any(l in outputs for l in layers):
        reasons.insert(0, "its output is part of the model output")
    elif not consumers and not reasons:
        reasons.append("its channels reach no layer the dependency graph follows (e.g. fused attention, a layer left alone)")
    prunable = not reasons
    unit = UnitSpec(
        index=index,
        name=layers[0] + (f"+{len(layers) - 1}" if len(layers) > 1 else ""),
        layers=tuple(layers),
        channels=info.channels,
        channel_step=info.channel_groups if prunable else 1,
        prunable=prunable,
        frozen=is_frozen,
        reason="; ".join(reasons),
        fp32_per_channel=info.fp32_per_channel,
    )
    graph = UnitGraph(root=name, targets=info.targets, channel_groups=info.channel_groups, per_head_norms=tuple(info.per_head_norms),
                      pruned_as_listed=info.pruned_as_listed)
    if prunable:
        graph.removal_order = rank_channels(model, graph, info.channels, 1)
    return unit, graph


def _layer_spec(module: nn.Module, name: str, positions: tuple[int, int], unit: int, in_units: list[tuple[int, int]],
                out_per_channel: int) -> LayerSpec:
    if isinstance(module, nn.Linear):
        kind, cin, cout, kernel, stride, groups = "linear", module.in_features, module.out_features, (), 1, 1
    elif isinstance(module, OutputMajorEmbedding):
        kind, cin, cout, kernel, stride, groups = "embedding", module.in_channels, module.out_channels, (), 1, 1
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
        transposed=getattr(module, "transposed", False),
        out_per_channel=out_per_channel,
    )


def _verify_pruning(model: nn.Module, example_input: torch.Tensor, graph: ModelGraph) -> ModelGraph:
    """The graph with its units' channel steps confirmed (or pruning disabled) by trial pruning."""
    spec = graph.spec
    units = verify_units(plain_copy(model, spec.routes, spec.folds).eval(), example_input, list(spec.units), graph.units)
    final_spec = ModelSpec(
        units=tuple(units),
        layers=_with_fixed_channels(spec, units),
        input_shape=spec.input_shape,
        fixed_fp32_params=spec.fixed_fp32_params,
        unsupported=spec.unsupported,
        total_params=spec.total_params,
        routes=spec.routes,
        folds=spec.folds,
    )
    return ModelGraph(final_spec, graph.units)


def _with_fixed_channels(spec: ModelSpec, units: list[UnitSpec]) -> tuple[LayerSpec, ...]:
    """Fill each layer's ``in_fixed`` and ``out_fixed``: input features and output channels no
    unit prunes (an image's channels; the channels past a partial residual), so that every
    count of the unpruned model is its real one."""
    out = []
    for layer in spec.layers:
        fed = sum(units[u].channels * k for u, k in layer.in_units)
        owned = units[layer.unit].channels * layer.out_per_channel
        out.append(replace(layer, in_fixed=layer.in_channels - fed, out_fixed=layer.out_channels - owned))
    return tuple(out)

"""Channel surgery on a model: masking channels, removing them, and checking the two agree.

Analysis (``graph``), search mode (``masking``) and export mode (``export``) all act on the
same per-unit description, a ``UnitGraph``: which parameter slices each channel owns and
the order channels go in. This module holds that description and the three operations on
it, so the trial-prune check that analysis runs uses exactly the code search and export
run afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable, Generator, Iterator

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm
from torch.overrides import TorchFunctionMode
from torch_pruning import _helpers as tp_helpers
from torch_pruning import ops as tp_ops
from torch_pruning.dependency import graph as tp_graph
from torch_pruning.dependency import group as tp_group
from torch_pruning.dependency import index_mapping as tp_index_mapping
from torch_pruning.dependency import shape_infer as tp_shape_infer
from torch_pruning.pruner.function import InstanceNormPruner

from metacompress.compressors import embedding_table, instance_norm, layer_norm
from metacompress.compressors.attention import SplitAttention, follow_pruned_heads, splittable
from metacompress.compressors.embedding_table import OutputMajorEmbedding, OutputMajorEmbeddingPruner
from metacompress.compressors.weight_reads import Folds, Routes, rewire
from metacompress.compressors.instance_norm import PlainInstanceNorm
from metacompress.compressors.layer_norm import NormPruner, as_maskable, clear_removed, mark_removed, maskable, maskable_norms, norm_pruners
from metacompress.compressors.recurrent import RecurrentPruner, UnrolledRNN, unrollable
from metacompress.compressors.transposed_conv import OutputMajorConvTranspose, OutputMajorPruner, convertible
from metacompress.compressors.transposed_linear import as_linear, is_transposed_linear
from metacompress.compressors.recovery import output_tensors

log = logging.getLogger(__name__)

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, OutputMajorConvTranspose)  # the last: a transposed conv in a private copy
QUANTIZABLE = CONVS + (nn.Linear, OutputMajorEmbedding)
EQUIVALENCE_TOL = 1e-4


@dataclass(frozen=True)
class MaskTarget:
    """The slice of one module's parameters that a unit's channels own.

    Args:
        module: module path (for ``"param"``, the parameter's path).
        role: ``"out"`` (weight rows, bias, norm affine), ``"in"`` (weight columns) or
            ``"param"`` (slices of a raw ``nn.Parameter`` along ``dim``: a position table, a
            class token, a layer scale).
        indices: (C, k) long tensor: the module indices fed by each of the unit's C channels
            (for a grouped conv's input: the column within its group, which is the same
            column in every group because such units remove channels group-symmetrically).
        dim: the dimension of a ``"param"`` target its indices select (Torch-Pruning's).
    """

    module: str
    role: str
    indices: torch.Tensor
    dim: int = 0


@dataclass
class UnitGraph:
    """Per-unit internals that the spec leaves out: mask targets and channel ranking."""

    root: str
    targets: list[MaskTarget] = field(default_factory=list)
    # channels ordered least important first, in whole steps
    removal_order: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    # the channels form this many equal groups (a grouped conv's) and go symmetrically: the
    # same position in every group at once, which is how Torch-Pruning prunes grouped convs
    channel_groups: int = 1
    # norms that normalise each attention head on its own (qk-norm: Qwen3's, Gemma 3's, timm's
    # ``qk_norm``): whole heads leave them whole, so Torch-Pruning must not slice them
    per_head_norms: tuple[str, ...] = ()
    # the targets are the whole unit (grouped-query attention's, which Torch-Pruning pairs one
    # to one): pruned target by target, not through Torch-Pruning's group
    pruned_as_listed: bool = False

    def removed_channels(self, unit, kept: int) -> torch.Tensor:
        """The channel indices a plan keeping ``kept`` channels of ``unit`` (a ``UnitSpec``) removes."""
        return self.removal_order[: unit.channels - kept]

    def root_channels(self, removed: torch.Tensor) -> torch.Tensor:
        """The root layer's output channels that removing the unit's ``removed`` channels removes.

        The same indices, except where each unit channel owns several of the root's (the conv
        before a GLU or a chunk: channel ``c`` is its outputs ``c`` and ``c + C``).
        """
        own = next((t.indices for t in self.targets if t.module == self.root and t.role == "out"), None)
        return removed if own is None else own[removed].flatten()


def dependency_graph(model: nn.Module, example_input: torch.Tensor, ignored: list[nn.Module] = ()) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model`` (traced with autograd, so never under no_grad)."""
    with warnings.catch_warnings():
        # raw nn.Parameters are pruned along their last non-singleton dimension, which groups.group_of masks
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        with torch.enable_grad():
            # output_tensors: a transformers ModelOutput holds nested tuples and cache objects Torch-Pruning cannot walk;
            # InstanceNormPruner reads the attributes PlainInstanceNorm keeps
            return _MeasuredGraph().build_dependency(model, example_inputs=example_input, ignored_layers=list(ignored),
                                                           output_transform=lambda out: [t for t in output_tensors(out) if t.grad_fn],
                                                           customized_pruners={OutputMajorConvTranspose: OutputMajorPruner(),
                                                                               UnrolledRNN: RecurrentPruner(),
                                                                               OutputMajorEmbedding: OutputMajorEmbeddingPruner(),
                                                                               PlainInstanceNorm: InstanceNormPruner(),
                                                                               **norm_pruners(model)})


class _MeasuredShapes(TorchFunctionMode):
    """Records, keyed by the output's ``grad_fn``, each traced ``torch.cat``'s input sizes and each
    ``chunk``/``split``'s piece sizes along their dimension (splits: only a feature map's channels).

    A gated linear unit (``F.glu``, which ``nn.GLU`` calls) is one opaque op to Torch-Pruning,
    which then maps its 2C input channels straight onto the C-channel layers after it, past
    their size: a Conformer's convolution module (torchaudio's, ESPnet's, transformers'
    Wav2Vec2-Conformer, the pretrained torchfcpe pitch estimator) was quantize-only. Traced
    here as what it computes, a chunk and a product, the chunk's tied pieces make channel ``c``
    of the gate's output own channels ``c`` and ``c + C`` of the conv before it.
    """

    CATS = (torch.cat, torch.concat, torch.concatenate)
    CHUNKS = (torch.chunk, torch.Tensor.chunk)
    SPLITS = CHUNKS + (torch.split, torch.Tensor.split)

    def __init__(self) -> None:
        super().__init__()
        self.concats: dict = {}
        self.splits: dict = {}  # grad_fn -> (piece sizes, whether the pieces are a chunk's: equal by construction)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.glu:  # the calls in here are not traced by this mode: the chunk is recorded by hand
            x, dim = args[0], args[1] if len(args) > 1 else kwargs.get("dim", -1)
            value, gate = pieces = x.chunk(2, dim)
            self._record_split(pieces, dim, chunk=True)
            return value * torch.sigmoid(gate)
        out = func(*args, **kwargs)
        if func in self.CATS and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            tensors = args[0] if args else kwargs["tensors"]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
            if all(t.grad_fn is not None for t in tensors):  # Torch-Pruning's node lists inputs with a grad_fn only
                self.concats[out.grad_fn] = [t.shape[dim % out.ndim] for t in tensors]
        elif func in self.SPLITS and isinstance(out, tuple) and out:
            self._record_split(out, args[2] if len(args) > 2 else kwargs.get("dim", 0), chunk=func in self.CHUNKS)
        return out

    def _record_split(self, pieces: tuple[torch.Tensor, ...], dim: int, chunk: bool) -> None:
        # feature maps' channels only: a recurrent layer's (N, gates) chunks, tied, would loop through its time steps
        if pieces[0].grad_fn is not None and pieces[0].ndim >= 3 and dim % pieces[0].ndim == 1:
            self.splits[pieces[0].grad_fn] = ([t.shape[1] for t in pieces], chunk)


class _MeasuredGraph(tp.DependencyGraph):
    """A dependency graph whose concatenations and channel splits carry their measured sizes.

    Torch-Pruning infers a concat's input channel counts by walking the graph, and that walk
    gives up (``None``) on deep nests of skip connections such as MONAI's U-Net, where its
    index mapping then fails on ``sum`` of a ``None`` and the whole model would be
    unprunable. It infers a split's piece sizes from its consumers, and pairs its i-th
    consumer with piece i, which is wrong once a piece has several consumers (YOLOv8's C2f
    chunks a conv's output, and the second half feeds a bottleneck, its residual add and the
    concat). The sizes the trace's own forward pass saw are exact, and autograd says which
    piece each consumer reads (``_pieces_read``, ``_ChunkIndexMapping``).
    """

    def build_dependency(self, *args, **kwargs):
        with _index_mapping_fixes():
            return super().build_dependency(*args, **kwargs)

    def get_pruning_group(self, *args, **kwargs):  # it re-runs the index mapping
        with _index_mapping_fixes(), _indexed_pruning_ops():
            return super().get_pruning_group(*args, **kwargs)

    def _trace(self, model, example_inputs, forward_fn, output_transform):
        with _MeasuredShapes() as measured:
            module2node = super()._trace(model, example_inputs, forward_fn, output_transform)
        for node in module2node.values():
            if node.type == tp_ops.OPTYPE.CONCAT and len(measured.concats.get(node.grad_fn, ())) == len(node.inputs):
                node.module.concat_sizes = measured.concats[node.grad_fn]
            elif node.type == tp_ops.OPTYPE.SPLIT and node.grad_fn in measured.splits:
                sizes, node.module.measured_chunk = measured.splits[node.grad_fn]
                node.module.measured_offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
                node.module.edge_pieces = _pieces_read(node)
        return module2node


def _pieces_read(split: tp_graph.Node) -> list[int] | None:
    """Which piece of ``split`` each entry of ``split.outputs`` reads, from the consumers' autograd inputs.

    A consumer listed twice (a concat of both pieces) reads its pieces in its inputs' order.
    None when a consumer does not read the split directly (the mapping is then left as it was).
    """
    taken: dict[int, int] = {}
    pieces = []
    for consumer in split.outputs:
        read = [nr for fn, nr in getattr(consumer.grad_fn, "next_functions", ()) if fn is split.grad_fn]
        position = taken.get(id(consumer), 0)
        if position >= len(read):
            return None
        pieces.append(read[position])
        taken[id(consumer)] = position + 1
    return pieces


class _ChunkIndexMapping:
    """Channel indices between a chunk's input and one of its pieces, the pieces tied together.

    ``chunk`` cuts equal pieces from whatever it is given, so pruning channel ``c`` of one piece
    is only consistent with pruning channel ``c`` of every piece: towards a piece, any input
    channel maps to its position within its own piece; back, a piece's channel maps to its
    offset in the input. (Torch-Pruning's ``_SplitIndexMapping`` leaves the pieces independent.)
    """

    def __init__(self, offset: list[int], reverse: bool) -> None:
        self.offset, self.reverse = offset, reverse

    def __call__(self, idxs):
        start, end = self.offset
        if self.reverse:
            return [tp_helpers._HybridIndex(idx=i.idx + start, root_idx=i.root_idx) for i in idxs]
        size, mapped = end - start, {}
        for i in idxs:  # channels c and c + size of the input are one channel of each piece: listed once
            mapped.setdefault(i.idx % size, tp_helpers._HybridIndex(idx=i.idx % size, root_idx=i.root_idx))
        return list(mapped.values())


def _has_pruning_op(group: tp_group.Group, dep: tp.Dependency, idxs: list) -> bool:
    """``Group.has_pruning_op`` through a set of the group's items, (target, handler, indices).

    Torch-Pruning scans the whole group for every dependency it reaches while it grows the
    group, quadratic in the group's size: on transformers' MobileViTV2 (64 px) 19 of the 28 s
    spent grouping. The answer is the same (indices are (int, int) pairs, compared by value).
    The set grows with the group, which is right while items are only appended, as they are in
    the walk that asks (``get_pruning_group``).
    """
    ops = group.__dict__.setdefault("_ops", set())
    for item_dep, item_idxs in group.items[group.__dict__.get("_ops_from", 0):]:
        ops.add((item_dep.target, item_dep.handler, tuple(item_idxs)))
    group._ops_from = len(group.items)
    return (dep.target, dep.handler, tuple(idxs)) in ops


@contextlib.contextmanager
def _indexed_pruning_ops():
    """Torch-Pruning's group walk without its repeated work, for the call: the same groups.

    - ``Group.has_pruning_op`` looks up a set (``_has_pruning_op``).
    - ``get_pruning_group`` re-derives every index mapping of the graph before each group,
      inferring channel counts recursively through the whole graph (88% of Swin-V2-T's
      analysis, which asks for 6,500 groups). The mappings depend on the layers' shapes alone,
      so they are derived again only when a parameter's shape changed since (pruning).
    """
    saved_lookup, saved_update = tp_group.Group.has_pruning_op, tp_index_mapping.update_index_mapping

    def update_when_reshaped(graph: tp.DependencyGraph) -> None:
        shapes = tuple(tuple(p.shape) for p in graph.model.parameters())
        if graph.__dict__.get("_mapped_for_shapes") != shapes:
            saved_update(graph)
            graph._mapped_for_shapes = shapes

    tp_group.Group.has_pruning_op, tp_index_mapping.update_index_mapping = _has_pruning_op, update_when_reshaped
    try:
        yield
    finally:
        tp_group.Group.has_pruning_op, tp_index_mapping.update_index_mapping = saved_lookup, saved_update


@contextlib.contextmanager
def _index_mapping_fixes():
    """Torch-Pruning's index mappings, two of them corrected for the call.

    Reshapes: one whose channels it infers as 0 is left unmapped. torchvision's ShuffleNetV2
    views its shuffled channels back to 4-D and chunks them; Torch-Pruning infers 0 channels
    past the chunk and divides by it, which made the whole model untraceable. Left unmapped,
    the shuffle's channels show up as mapping unevenly, so only the groups it mixes are
    quantize-only (as for any shuffle), and trial pruning (``verify_units``) still checks
    every unit.

    Channel splits measured by the trace (``_MeasuredGraph``) map each consumer to the
    piece it reads, a chunk's pieces tied (``_ChunkIndexMapping``).

    Slices map channels only where they cut the channel dimension (``_slice_cuts_channels``).
    """
    reshape, split = tp_index_mapping.update_reshape_index_mapping, tp_index_mapping.update_split_index_mapping
    slice_ = tp_index_mapping.update_slice_index_mapping

    def tolerant(graph, node) -> None:
        try:
            reshape(graph, node)
        except ZeroDivisionError:
            pass

    def by_piece(graph, node) -> None:
        pieces = getattr(node.module, "edge_pieces", None)
        if pieces is None:
            split(graph, node)
            return
        offsets, tied = node.module.measured_offsets, node.module.measured_chunk
        mapping = _ChunkIndexMapping if tied else tp_index_mapping._SplitIndexMapping
        for reverse in (False, True):
            addressed: list = []
            for consumer, piece in zip(node.outputs, pieces):
                source, target = (consumer, node) if reverse else (node, consumer)
                dep = next((d for d in source.dependencies if d.target == target and not any(d is a for a in addressed)), None)
                if dep is not None:
                    dep.index_mapping[0] = mapping(offset=offsets[piece : piece + 2], reverse=reverse)
                    addressed.append(dep)

    def by_layout(graph, node) -> None:
        cuts = _slice_cuts_channels(graph, node)
        if cuts is None:
            slice_(graph, node)
        elif cuts:
            start, step, end = node.module.start, node.module.step, node.module.end
            for source in node.inputs:
                for reverse, deps, target in ((True, node.dependencies, source), (False, source.dependencies, node)):
                    for dep in deps:
                        if dep.target == target:
                            dep.index_mapping[0] = tp_index_mapping._SliceIndexMapping(dim=node.module.dim, start=start, end=end,
                                                                                       step=step, reverse=reverse)

    saved = reshape, split, slice_
    (tp_index_mapping.update_reshape_index_mapping, tp_index_mapping.update_split_index_mapping,
     tp_index_mapping.update_slice_index_mapping) = tolerant, by_piece, by_layout
    try:
        yield
    finally:
        (tp_index_mapping.update_reshape_index_mapping, tp_index_mapping.update_split_index_mapping,
         tp_index_mapping.update_slice_index_mapping) = saved


def _slice_cuts_channels(graph: tp.DependencyGraph, node: tp_graph.Node) -> bool | None:
    """Whether a traced slice cuts its input's channel dimension; None where the layout is ambiguous.

    Torch-Pruning maps a slice's channels when it cuts dimension 1 of a 4-D tensor, the last of
    a 3-D one and any of a 2-D one: 3-D tensors are (N, T, C) to it. A Conv1d's feature map is
    (N, C, L): WaveNet's gate ``tanh(h[:, :c]) * sigmoid(h[:, c:])`` went unmapped and its conv
    was quantize-only, while a crop in time (``h[..., pad:]``) shifted the channel indices. The
    channel dimension of a 3-D tensor is the one whose size is its producer's channel count,
    when just one is; a 2-D tensor's is dimension 1 (a slice of the batch maps nothing).
    """
    sizes = tuple(getattr(node.grad_fn, "_saved_self_sym_sizes", ()))
    dim = node.module.dim
    if len(sizes) not in (2, 3) or not 0 <= dim < len(sizes):
        return None
    if len(sizes) == 2:
        return dim == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Maximum recursive depth reached!": the channels are then unknown (None)
        channels = next((c for c in (tp_shape_infer.infer_out_channels_recursively(graph, n, [0]) for n in node.inputs) if c), None)
    matching = [d for d in (1, 2) if sizes[d] == channels]
    return dim == matching[0] if len(matching) == 1 else None


def _norm_hooks(module: nn.Module) -> list:
    """The old-style (forward pre-hook) weight norm and spectral norm of ``module``."""
    return [hook for hook in module._forward_pre_hooks.values() if isinstance(hook, (WeightNorm, SpectralNorm))]


def weight_reparametrizations(model: nn.Module) -> list[str]:
    """Module paths whose weights are computed by a reparametrization (weight norm, spectral norm)."""
    return [name for name, module in model.named_modules() if parametrize.is_parametrized(module) or _norm_hooks(module)]


# Built-in layers whose packed weights no stage can read, each with the equivalent module of
# plain layers it becomes in the private copy (``plain_copy``).
REWRITES: tuple[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], nn.Module]], ...] = (
    (splittable, SplitAttention.from_module),
    (convertible, OutputMajorConvTranspose),
    (unrollable, UnrolledRNN),
    (embedding_table.convertible, OutputMajorEmbedding),
    (is_transposed_linear, as_linear),
    (instance_norm.convertible, PlainInstanceNorm),
    (layer_norm.convertible, as_maskable),
)


def rewritten_layers(model: nn.Module) -> list[str]:
    """Module paths that ``plain_copy`` replaces by another module (``REWRITES``)."""
    return [name for name, module in model.named_modules() if any(matches(module) for matches, _ in REWRITES)]


def needs_plain_copy(model: nn.Module) -> bool:
    """Whether ``plain_copy`` computes ``model`` with other parameters or modules than its own."""
    return bool(weight_reparametrizations(model)) or bool(rewritten_layers(model))


def plain_copy(model: nn.Module, routes: Routes = (), folds: Folds = ()) -> nn.Module:
    """A private deep copy of ``model`` every stage can read: weight norm folded, packed layers rewritten.

    Weight norm and spectral norm are training-time reparametrizations (locuslab's TCN,
    WaveNet-style and GAN code use them) that deployment folds away. Every stage here needs ``.weight`` to be a leaf
    Parameter: the Hessian probes differentiate it, masking and pruning slice it, recovery and
    ONNX export attach their own parametrization to it. In eval mode the copy computes the
    same outputs; the user's model keeps its reparametrizations.

    ``REWRITES`` turns built-in layers with packed weights into the same function of plain
    layers: ``nn.MultiheadAttention`` into ``SplitAttention`` (q/k/v/out Linears, pruned by
    heads), a transposed conv into ``OutputMajorConvTranspose`` (its weight stored output
    channel first, as every stage reads a weight), an LSTM or GRU into ``UnrolledRNN``
    (Linears stepped over time), an ``nn.Embedding`` into ``OutputMajorEmbedding`` (its table
    stored dimension first), GPT-2's input-major ``Conv1D`` into an ``nn.Linear``, an affine
    ``nn.InstanceNorm`` into a ``PlainInstanceNorm`` (so Torch-Pruning can follow it), an
    ``nn.LayerNorm``'s forward runs through ``LeaveOutRemoved`` (so masking can leave channels
    out of its statistics). A layer whose weight another module shares is not rewritten.

    ``routes`` (an analysis's ``ModelSpec.routes``) run the Linears whose weights a parent reads
    in its forward code as layers; ``folds`` (``ModelSpec.folds``) store the weight a layer
    computes from its own (weight standardization) as its weight (``weight_reads``).
    """
    # the old hooks leave a non-leaf weight computed by the last forward, which deepcopy
    # refuses; the memo hands the copy a detached value (the next forward recomputes it)
    memo = {id(getattr(m, h.name)): getattr(m, h.name).detach().clone() for m in model.modules() for h in _norm_hooks(m)}
    copied = copy.deepcopy(model, memo)
    for module in list(copied.modules()):
        for hook in _norm_hooks(module):
            (remove_weight_norm if isinstance(hook, WeightNorm) else remove_spectral_norm)(module, hook.name)
        if parametrize.is_parametrized(module):
            # not parametrize.remove_parametrizations: it deletes the property from the
            # Parametrized* class, which the copy shares with the user's model
            values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
            module.__class__ = module.__class__.__bases__[0]
            del module.parametrizations
            for name, value in values.items():
                module.register_parameter(name, nn.Parameter(value))
    shared = _shared_parameters(copied)
    for name, module in list(copied.named_modules()):
        if any(id(p) in shared for p in module.parameters(recurse=False)):
            continue  # a weight tied to another module (an LM head's) stays one fp32 tensor
        for matches, rewrite in REWRITES:
            if matches(module):
                parent, _, attr = name.rpartition(".")
                setattr(copied.get_submodule(parent) if parent else copied, attr, rewrite(module))
    for module in copied.modules():
        if isinstance(module, nn.TransformerEncoder):  # its nested-tensor fast path runs packed attention weights only
            module.use_nested_tensor = False
    return rewire(copied, routes, folds)


def _shared_parameters(model: nn.Module) -> set[int]:
    """Ids of parameters that more than one module holds (tied weights)."""
    owners: dict[int, set[int]] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), set()).add(id(module))
    return {param for param, modules in owners.items() if len(modules) > 1}


def _weight(module: nn.Module) -> torch.Tensor:
    """The trainable weight tensor, also while a fine-tuning parametrization is attached."""
    if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def mask_unit(model: nn.Module, unit_graph: UnitGraph, removed: torch.Tensor) -> None:
    """Zero every parameter slice fed by the ``removed`` channels of one unit, in place.

    Zeroed output rows, biases and BatchNorm affine terms make those channels exactly 0,
    and zeroed input columns make downstream layers ignore them, which is what physical
    removal computes; so do zeroed slices of a raw parameter (a position table added to the
    channels). A LayerNorm or RMSNorm leaves the channels out of its statistics (``layer_norm``);
    ``clear_removed`` undoes that where the masked tensors are restored.
    """
    if removed.numel() == 0:
        return
    for target in unit_graph.targets:
        idx = target.indices[removed].flatten()
        if target.role == "param":
            parameter = model.get_parameter(target.module)
            parameter.index_fill_(target.dim, idx.to(parameter.device), 0)
            continue
        module = model.get_submodule(target.module)
        if target.role == "in":
            _weight(module)[:, idx] = 0
            continue
        if isinstance(module, QUANTIZABLE):
            _weight(module)[idx] = 0
        elif module.weight is not None:
            module.weight[idx] = 0
        if getattr(module, "bias", None) is not None:  # nn.RMSNorm has no bias
            module.bias[idx] = 0
        if getattr(module, "running_mean", None) is not None:
            module.running_mean[idx] = 0
            module.running_var[idx] = 1
        if maskable(module):
            mark_removed(module, idx)


def own_rows(module: nn.Module) -> list[str]:
    """A layer's own parameters, besides weight and bias, that hold one row per output channel.

    NF-Nets' ``ScaledStdConv2d`` keeps a per-filter ``gain`` for its weight standardization,
    which folding makes dead but leaves in the forward: Torch-Pruning prunes a layer's weight
    and bias, so the gain kept its old rows and the forward failed on a pruned layer.
    """
    if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return []
    out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    return [name for name, p in module.named_parameters(recurse=False) if name not in ("weight", "bias") and p.dim() and len(p) == out]


def prune_units(model: nn.Module, example_input: torch.Tensor, removals: list[tuple[UnitGraph, torch.Tensor]]) -> None:
    """Physically remove channels, in place: ``(unit graph, unit channel indices)`` per unit (no graph is built for none).

    Attention modules' head counts follow their pruned projections (``follow_pruned_heads``),
    and a layer's own per-channel parameters its pruned rows (``own_rows``).
    """
    if not any(removed.numel() for _, removed in removals):
        return
    rows = {name: (own, set()) for name, module in model.named_modules() if (own := own_rows(module))}
    per_head = {name for unit_graph, removed in removals if removed.numel() for name in unit_graph.per_head_norms}
    # traced before any prune, and only if a unit goes through Torch-Pruning's group (a trial of an attention unit needs none)
    traced = any(removed.numel() and not unit_graph.pruned_as_listed for unit_graph, removed in removals)
    graph = dependency_graph(model, example_input, [model.get_submodule(name) for name in sorted(per_head)]) if traced else None
    pruned = []
    for unit_graph, removed in removals:
        if not removed.numel():
            continue
        if unit_graph.pruned_as_listed:  # an attention's Linears, and norms over its queries or keys
            for target in unit_graph.targets:
                module, indices = model.get_submodule(target.module), target.indices[removed].flatten().tolist()
                if maskable(module):
                    NormPruner().prune_out_channels(module, indices)
                else:
                    (tp.prune_linear_out_channels if target.role == "out" else tp.prune_linear_in_channels)(module, indices)
        else:
            root = model.get_submodule(unit_graph.root)
            pruner = graph.get_pruner_of_module(root)
            graph.get_pruning_group(root, pruner.prune_out_channels, unit_graph.root_channels(removed).tolist()).prune()
        outputs = [target.module for target in unit_graph.targets if target.role == "out"]
        channels = len(unit_graph.targets[0].indices)  # every target has a row per unit channel
        pruned.append((outputs, Fraction(channels - removed.numel(), channels)))
        for target in unit_graph.targets:
            if target.role == "out" and target.module in rows:
                rows[target.module][1].update(target.indices[removed].flatten().tolist())
    follow_pruned_heads(model, pruned)
    for name, (own, gone) in rows.items():
        module = model.get_submodule(name)
        for parameter_name in own:
            old = getattr(module, parameter_name)
            kept = [i for i in range(len(old)) if i not in gone]
            setattr(module, parameter_name, nn.Parameter(old.detach()[kept].clone(), requires_grad=old.requires_grad))


def _masked_tensors(model: nn.Module, unit_graphs: list[UnitGraph]) -> list[torch.Tensor]:
    """Every tensor ``mask_unit`` may write for these units (weights, biases, BatchNorm statistics)."""
    tensors = {}
    for unit_graph in unit_graphs:
        for target in unit_graph.targets:
            if target.role == "param":
                parameter = model.get_parameter(target.module)
                tensors[id(parameter)] = parameter
                continue
            module = model.get_submodule(target.module)
            weight = getattr(module, "weight", None)
            for tensor in (weight, _weight(module) if weight is not None else None,
                           getattr(module, "bias", None), getattr(module, "running_mean", None), getattr(module, "running_var", None)):
                if isinstance(tensor, torch.Tensor):
                    tensors[id(tensor)] = tensor
    return list(tensors.values())


@contextlib.contextmanager
def _restored(tensors: list[torch.Tensor]) -> Iterator[None]:
    """Put ``tensors``' values back on the way out, whatever happened to them inside."""
    saved = [t.detach().clone() for t in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved):
                tensor.copy_(value)


def prunes_consistently(model: nn.Module, example_input: torch.Tensor, unit_graphs: list[UnitGraph], removed: list[torch.Tensor]) -> bool:
    """Do masking and real pruning of these channels give the same outputs (every output tensor)?

    ``model`` (a private copy: analysis's) is masked in place and restored, so a trial copies
    the model once, for the pruning, and otherwise only the tensors the masking touches.
    """
    pruned = copy.deepcopy(model)
    try:
        with torch.no_grad(), _restored(_masked_tensors(model, unit_graphs)):
            try:
                for unit_graph, channels in zip(unit_graphs, removed):
                    mask_unit(model, unit_graph, channels)
                expected = output_tensors(model(example_input))
            finally:
                clear_removed(maskable_norms(model))
        prune_units(pruned, example_input, list(zip(unit_graphs, removed)))
        with torch.no_grad():
            actual = output_tensors(pruned(example_input))
    except Exception as exc:  # Torch-Pruning could not follow this group at this step
        log.debug("trial prune of %s failed: %s", [g.root for g in unit_graphs], exc)
        return False
    if [e.shape for e in expected] != [a.shape for a in actual]:
        return False
    return all(bool(((e - a).abs().max() / e.abs().max().clamp_min(1.0)) < EQUIVALENCE_TOL) for e, a in zip(expected, actual))


def verify_units(model: nn.Module, example_input: torch.Tensor, units: list, unit_graphs: list[UnitGraph]) -> list:
    """``search_steps``, then each normalised stream's unit pruned alone by its step; the steps searched again without those that fail.

    A LayerNorm-normalised stream is what attention reads its head width from
    (``x.shape[-1] // heads``, torchvision's Swin), a read Torch-Pruning does not see: the
    stream and the qkv unit then prune consistently together (a round of ``search_steps``)
    but not one without the other, as a plan may choose. Such a stream is made quantize-only
    and the other units' steps are searched again without it.
    """
    units = search_steps(model, example_input, units, unit_graphs)
    coupled = [
        unit.index for unit in units
        if unit.prunable and _normalised(model, unit_graphs[unit.index])
        and not prunes_consistently(model, example_input, [unit_graphs[unit.index]],
                                    [unit_graphs[unit.index].removed_channels(unit, unit.channels - unit.channel_step)])
    ]
    if not coupled:
        return units
    for index in coupled:
        units[index] = replace(units[index], prunable=False, channel_step=1,
                               reason="pruning it alone breaks the forward: another unit's layers read its width (e.g. attention "
                                      "computing its head width as x.shape[-1] // heads)")
        unit_graphs[index].removal_order = torch.zeros(0, dtype=torch.long)
    return search_steps(model, example_input, units, unit_graphs)


def _normalised(model: nn.Module, unit_graph: UnitGraph) -> bool:
    """Does a LayerNorm normalise the unit's channels, or a raw parameter hold them (a stream's position table)?"""
    return any(t.role == "param" or maskable(model.get_submodule(t.module)) for t in unit_graph.targets)


def search_steps(model: nn.Module, example_input: torch.Tensor, units: list, unit_graphs: list[UnitGraph]) -> list:
    """Trial-prune each prunable unit (``UnitSpec``) by one step; coarsen the step or disable pruning where it fails.

    All units are tried together first (the common case: one trial). Otherwise each unit
    searches its finest consistent step (``_step_search``: attention q/k/v prune whole heads
    this way) and is made quantize-only, with the reason, if no step below all its channels
    works. The searches advance in rounds: after step 1 (tried unit by unit), a round's steps
    are tried together and only a failing round unit by unit: ViT-B/16's twelve attention
    units take 17 trials past step 1 instead of 60 (four rounds pass together; the last fails
    together, then unit by unit). Each unit's ``removal_order`` is updated to the step found.
    """
    units = list(units)
    candidates = [(u, g) for u, g in zip(units, unit_graphs) if u.prunable]
    one_step = [g.removed_channels(u, u.channels - u.channel_step) for u, g in candidates]
    if prunes_consistently(model, example_input, [g for _, g in candidates], one_step):
        return units
    searches = {u.index: _step_search(u.channels // g.channel_groups) for u, g in candidates}
    asked: dict[int, int] = {}  # unit index -> the step its search asks about next
    found: dict[int, int | None] = {}
    for index, search in searches.items():
        _advance(search, None, index, asked, found)
    together = False  # the first round is step 1, which just failed together: it goes unit by unit
    while asked:
        trial = [(u, g, asked[u.index]) for u, g in candidates if u.index in asked]
        removed = []
        for unit, unit_graph, step in trial:
            unit_graph.removal_order = rank_channels(model, unit_graph, unit.channels, step)
            removed.append(unit_graph.removed_channels(unit, unit.channels - step * unit_graph.channel_groups))
        if together and len(trial) > 1 and prunes_consistently(model, example_input, [g for _, g, _ in trial], removed):
            verdicts = [True] * len(trial)
        else:
            verdicts = [prunes_consistently(model, example_input, [g], [r]) for (_, g, _), r in zip(trial, removed)]
        together = True
        for (unit, _, _), verdict in zip(trial, verdicts):
            _advance(searches[unit.index], verdict, unit.index, asked, found)
    for unit, unit_graph in candidates:
        step = found[unit.index]
        if step is None:
            units[unit.index] = replace(unit, prunable=False, channel_step=1, reason="no channel step prunes it consistently")
            unit_graph.removal_order = torch.zeros(0, dtype=torch.long)
        else:
            unit_graph.removal_order = rank_channels(model, unit_graph, unit.channels, step)
            units[unit.index] = replace(unit, channel_step=step * unit_graph.channel_groups)
    return units


def _advance(search: Generator[int, bool, int | None], verdict: bool | None, index: int,
             asked: dict[int, int], found: dict[int, int | None]) -> None:
    """Send a step search the verdict on its last step: its next step goes to ``asked``, its answer to ``found``."""
    try:
        asked[index] = search.send(verdict)
    except StopIteration as finished:
        asked.pop(index, None)
        found[index] = finished.value


def _step_search(width: int) -> Generator[int, bool, int | None]:
    """The finest channel step (per channel group) that prunes consistently, or None: yields
    each step to try and is sent whether it passed.

    A step that prunes consistently removes whole structural blocks (heads), so the steps
    that pass are the multiples of the finest one, and the greatest common divisor of two
    passing steps passes. After step 1, the maximal steps ``width / p`` (p a prime factor:
    every proper divisor of the width divides one) are tried, then their common divisor, and
    from a passing step ``g`` the search descends to a passing ``g / p`` until none passes.
    A unit no step prunes costs two or three trials, an attention unit of ViT-B/16 (width 768,
    heads of 64) six: 1, 384, 256, 128, 64, 32 (an ascending walk over the divisors took 14).
    """
    verdicts: dict[int, bool] = {}

    def passes(step: int) -> Generator[int, bool, bool]:
        if step not in verdicts:
            verdicts[step] = yield step
        return verdicts[step]

    if width > 1 and (yield from passes(1)):
        return 1
    passing = []
    for step in sorted({width // p for p in _prime_factors(width)} - {1}):
        if (yield from passes(step)):
            passing.append(step)
    if not passing:
        return None
    finest = math.gcd(*passing)
    if not (yield from passes(finest)):
        finest = min(passing)
    descended = True
    while descended:
        descended = False
        for p in _prime_factors(finest):
            if (yield from passes(finest // p)):
                finest, descended = finest // p, True
                break
    return finest


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return sorted(set(factors + ([n] if n > 1 else [])))


def rank_channels(model: nn.Module, graph: UnitGraph, channels: int, step: int) -> torch.Tensor:
    """Channels least important first, removed in whole blocks of ``step`` per channel group.

    Importance is the L2 norm of each channel's output weights, normalised per layer so
    large and small layers of a group count equally (Torch-Pruning's group magnitude). With
    ``channel_groups`` g > 1 (a grouped conv's channels) a block is the same ``step``
    positions in every group, so each block removes ``step * g`` channels.
    """
    score = torch.zeros(channels, dtype=torch.float64)
    for target in graph.targets:
        if target.role != "out":
            continue
        layer = model.get_submodule(target.module)
        if not isinstance(layer, QUANTIZABLE):
            continue
        rows = layer.weight.detach().cpu().double().reshape(layer.weight.shape[0], -1)[target.indices.flatten()]  # on the CPU: one ranking on every device
        norms = rows.norm(dim=1).reshape(channels, -1).sum(dim=1)
        score += norms / norms.mean().clamp_min(1e-12)
    groups = graph.channel_groups
    width = channels // groups
    blocks = score.reshape(groups, -1, step).sum(dim=(0, 2))
    order = torch.argsort(blocks, stable=True)
    within = order[:, None] * step + torch.arange(step)  # (blocks, step) positions in a group
    return (within[:, :, None] + width * torch.arange(groups)).flatten()

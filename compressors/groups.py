"""Dependency groups as analysis reads them: which parameter slices each channel of a group owns.

Torch-Pruning's group for a layer's output channels lists every module those channels
touch and at which indices. This module turns one group into per-channel mask targets,
records what makes it unprunable (a GroupNorm across its channels, an index mapping
Torch-Pruning lost), and makes sure every slice belongs to one unit only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import graph as tp_graph

from metacompress.compressors.attention import interleaved_qkv, key_value_projections
from metacompress.compressors.embedding_table import OutputMajorEmbedding
from metacompress.compressors.instance_norm import PlainInstanceNorm
from metacompress.compressors.layer_norm import channel_count, maskable
from metacompress.compressors.surgery import CONVS, QUANTIZABLE, MaskTarget, own_rows

# Normalisations of each channel on its own (MONAI's nets use affine InstanceNorm): a zeroed
# channel with zeroed affine terms stays 0, exactly as if it were removed.
MASKABLE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, PlainInstanceNorm)
# Activations with a parameter per channel: a zero channel stays 0 whatever its slope, and
# removing the channel removes its slope (one slope shared by all channels stays as it is).
PER_CHANNEL_ACTIVATIONS = (nn.PReLU,)
# Normalisations over the channel dimension: removing a channel changes every other
# channel's statistics, so masking (zeros) and pruning (removal) would disagree, except for a
# norm the private copy made maskable (``layer_norm``: a LayerNorm or RMSNorm over one dim, a GroupNorm).
CHANNEL_MIXING_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
KNOWN_PARAMETERISED = QUANTIZABLE + MASKABLE_NORMS + CHANNEL_MIXING_NORMS + PER_CHANNEL_ACTIVATIONS
# A group reaches each node of the graph a few times (once per index set a concat or split
# hands it). On some graphs Torch-Pruning's tracing never closes: TabNet's GLU slices and
# attention masks form a loop of index mappings that hands the same nodes ever new indices.
# A group past this many dependencies per graph node is reported as untraceable.
MAX_GROUP_DEPS_PER_NODE = 16
MAX_INDICES_PER_WIDTH = 4
"""A group whose index list at one dependency passes this many times the widest layer is a runaway: a
flatten mapping inside a loop of reshapes multiplies the indices at every pass (torchvision's Swin-T
exhausted 24 GiB in analysis)."""


@dataclass
class GroupInfo:
    """One dependency group as analysis sees it, before it becomes a unit."""

    out_layers: list[str]
    targets: list[MaskTarget]
    problems: list[str]
    channels: int
    # norm module -> (its channel indices, fp32 parameters per channel of the group)
    fp32: dict[str, tuple[set[int], int]] = field(default_factory=dict)
    channel_groups: int = 1
    per_head_norms: list[str] = field(default_factory=list)  # see ``UnitGraph.per_head_norms``
    pruned_as_listed: bool = False  # see ``UnitGraph.pruned_as_listed``

    @property
    def fp32_per_channel(self) -> int:
        return sum(per_channel for _, per_channel in self.fp32.values())


def group_of(graph: tp.DependencyGraph, module: nn.Module, root: str, names: dict[nn.Module, str]) -> GroupInfo:
    """The dependency group rooted at ``module``'s output channels, as mask targets.

    Anything Torch-Pruning gets wrong for this group (an exception in its index mapping, an
    index past a layer's size after a transpose) is recorded as a problem, which makes the
    unit quantize-only: analysis itself never fails on one group.
    """
    pruner = graph.get_pruner_of_module(module)
    channels = pruner.get_out_channels(module)
    info = GroupInfo([root], [MaskTarget(root, "out", torch.arange(channels)[:, None])], [], channels)
    if module not in graph.module2node:  # inside a layer the graph holds as one node (an unrolled LSTM/GRU)
        info.problems.append("it computes a recurrent layer's gates, whose hidden units Torch-Pruning cannot prune")
        return info
    index_limit = MAX_INDICES_PER_WIDTH * _widest(graph.model)  # once here: the per-channel traces below reuse it
    try:
        group = _traced_group(graph, module, pruner, list(range(channels)), index_limit)
        fans_out = any(len(item.idxs) != channels for item in group.items if isinstance(item.dep.target.module, nn.Module))
        reach = _single_channel_reach(graph, module, pruner, channels, index_limit) if fans_out else None
    except Exception as exc:  # e.g. its index mapping through a GRU's packed output
        info.problems.append(f"Torch-Pruning cannot trace its channels ({type(exc).__name__}: {exc})")
        return info
    paired = reach is not None and _paired_channels(reach, (id(module), True), channels)
    if paired:  # the conv before a GLU, a stream a ghost module writes back into: one unit channel is k of the root's
        reach = [reach[pair[0]] for pair in paired]
        channels = info.channels = len(paired)
    info.out_layers, info.targets = [], []
    grouped: set[int] = set()
    uneven, lost, mixing = [], [], []  # module names, summarised in one problem each
    parameter_names = {p: n for n, p in graph.model.named_parameters()}
    for item in group.items:
        target = item.dep.target.module
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        idxs = [int(i) for i in item.idxs]
        if isinstance(target, nn.Parameter):
            # a raw parameter on these channels (ViT's position table and class token, a layer scale):
            # its zeroed slices act as removed ones, and Torch-Pruning prunes it along the same dimension
            if target not in parameter_names:
                info.problems.append("it owns an nn.Parameter the model does not register")
                continue
            name, dim = parameter_names[target], graph.module2node[target].pruning_dim
            indices = _indices_per_channel(idxs, (id(target), is_out), channels, reach)
            if indices is None:
                uneven.append(name)
            elif indices.numel() and int(indices.max()) >= target.shape[dim]:
                lost.append(name)
            else:
                info.targets.append(MaskTarget(name, "param", indices, dim))
                info.fp32[name] = (set(idxs), target.numel() // target.shape[dim] * indices.shape[1])
            continue
        if not isinstance(target, nn.Module) or target not in names:
            continue
        name = names[target]
        # a parameter-free layer has nothing to slice, except a norm whose statistics leave removed channels out
        if (not any(True for _ in target.parameters(recurse=False)) and not maskable(target)) or (isinstance(target, nn.PReLU) and target.num_parameters == 1):
            continue
        indices = _indices_per_channel(idxs, (id(target), is_out), channels, reach)
        if indices is None:
            uneven.append(name)
            continue
        if indices.numel() and int(indices.max()) >= _channel_count(target, is_out):
            if _per_head(target, channels):
                info.per_head_norms.append(name)
            else:
                lost.append(name)
            continue
        if isinstance(target, nn.Embedding):  # a table subclass with its own forward (Gemma's scaled, OPT's offset positions)
            # stays an fp32 table, its columns (the stream's channels) pruned with the stream, as a raw parameter's
            info.targets.append(MaskTarget(f"{name}.weight", "param", indices, 1))
            info.fp32[name] = (set(idxs), target.num_embeddings * indices.shape[1])
            continue
        if isinstance(target, QUANTIZABLE):
            is_conv = isinstance(target, CONVS)
            depthwise = is_conv and target.groups == target.out_channels == target.in_channels and target.groups > 1
            if is_conv and target.groups > 1 and not depthwise:
                grouped.add(target.groups)
                if not is_out:  # weight columns are per group
                    indices = indices % (target.in_channels // target.groups)
            if is_out and indices.shape[1] > 1 and not (paired and name == root):  # it becomes a unit of its own
                info.problems.append(f"{name} has {indices.shape[1]} output channels per channel of this group (they meet a concat of a layer and a copy of it)")
                continue
            if is_out and name not in info.out_layers:
                info.out_layers.append(name)
            info.targets.append(MaskTarget(name, "out" if is_out or depthwise else "in", indices))
            if is_out and (own := own_rows(target)):  # fp32 rows pruned with the layer's (NF-Nets' gain)
                info.fp32[name] = (set(idxs), sum(getattr(target, p)[0].numel() for p in own) * indices.shape[1])
        elif isinstance(target, MASKABLE_NORMS):
            info.fp32[name] = (set(idxs), 2 * indices.shape[1] if target.affine else 0)
            info.targets.append(MaskTarget(name, "out", indices))
        elif maskable(target):  # a LayerNorm leaving masked channels out of its statistics, as removed ones
            if isinstance(target, nn.GroupNorm) and 1 < target.num_groups < target.num_channels:
                if sorted(indices.flatten().tolist()) != list(range(target.num_channels)):  # its groups would be cut unevenly
                    mixing.append(f"{name} ({type(target).__name__}, partly)")
                    continue
                grouped.add(target.num_groups)  # pruned group-symmetrically, each channel stays in its group
            info.fp32[name] = (set(idxs), sum(p.numel() for p in target.parameters(recurse=False)) // channel_count(target) * indices.shape[1])
            info.targets.append(MaskTarget(name, "out", indices))
        elif isinstance(target, PER_CHANNEL_ACTIVATIONS):
            info.fp32[name] = (set(idxs), indices.shape[1])
        elif isinstance(target, CHANNEL_MIXING_NORMS):
            mixing.append(f"{name} ({type(target).__name__})")
            info.fp32[name] = (set(idxs), sum(p.numel() for p in target.parameters(recurse=False)) // channels)
        else:
            info.problems.append(f"{name} ({type(target).__name__}) is not supported")
    if mixing:
        info.problems.append(f"{few_names(mixing)} normalise{'s' if len(mixing) == 1 else ''} across these channels")
    if uneven:
        info.problems.append(f"its channels map unevenly onto {few_names(uneven)} (a concat joined back into them, or a channel shuffle)")
    if lost:
        info.problems.append(f"Torch-Pruning maps its channels past the size of {few_names(lost)} (lost through a transpose or reshape)")
    if len(grouped) > 1 or (grouped and channels % max(grouped)):
        info.problems.append(f"grouped convs or GroupNorms with {sorted(grouped)} groups share these {channels} channels")
    elif grouped:
        info.channel_groups = grouped.pop()
    return info


def attention_group(model: nn.Module, attention: str) -> GroupInfo:
    """The unit of an attention whose heads the module's own layout gives (``attention.explicit_attention_layers``).

    With key/value heads (``key_value_projections``): channel ``c`` of key/value head ``j`` owns
    channel ``c`` of every query head it serves (``j * n + r`` for ``r < n``) and the output
    projection's columns reading them. GPT-NeoX's fused projection (``interleaved_qkv``): channel
    ``c`` of head ``h`` owns that head's query, key and value rows. Listed target by target
    (``UnitGraph.pruned_as_listed``): Torch-Pruning's group would pair the rows otherwise. Norms
    among its children of one head's width (Qwen3's qk-norm) are per head; of all the queries' or
    keys' width (OLMo-2's), they are pruned with them.
    """
    module = model.get_submodule(attention)
    if layout := interleaved_qkv(module):
        fused, out, head_dim = layout
        channels = getattr(module, out).in_features
        heads = torch.arange(channels)
        rows = (heads // head_dim * 3 * head_dim + heads % head_dim)[:, None] + torch.arange(3) * head_dim  # (channels, q/k/v)
        targets = [MaskTarget(f"{attention}.{fused}", "out", rows), MaskTarget(f"{attention}.{out}", "in", heads[:, None])]
        return GroupInfo([f"{attention}.{fused}"], targets, [], channels, pruned_as_listed=True)
    q, k, v, out = (f"{attention}.{layer}" for layer in key_value_projections(module))
    repeats, head_dim, channels = module.num_key_value_groups, module.head_dim, module.k_proj.out_features
    kv = torch.arange(channels)
    head, offset = kv // head_dim, kv % head_dim
    queries = ((head[:, None] * repeats + torch.arange(repeats)) * head_dim + offset[:, None])  # (channels, repeats)
    targets = [MaskTarget(q, "out", queries), MaskTarget(k, "out", kv[:, None]), MaskTarget(v, "out", kv[:, None]), MaskTarget(out, "in", queries)]
    info = GroupInfo([q, k, v], targets, [], channels, pruned_as_listed=True)
    for name, child in module.named_children():
        width = channel_count(child) if maskable(child) else 0
        if width == head_dim:
            info.per_head_norms.append(f"{attention}.{name}")
        elif width in (queries.numel(), channels):  # a norm over all the queries or all the keys
            rows = queries if width == queries.numel() else kv[:, None]
            info.targets.append(MaskTarget(f"{attention}.{name}", "out", rows))
            per_row = sum(p.numel() for p in child.parameters(recurse=False)) // width
            info.fp32[f"{attention}.{name}"] = (set(range(width)), per_row * rows.shape[1])
    return info


def untraced_group(module: nn.Module, root: str, reason: str) -> GroupInfo:
    """A quantize-only group of ``module`` alone, for a model Torch-Pruning cannot build a graph of."""
    channels = _channel_count(module, is_out=True)
    return GroupInfo([root], [MaskTarget(root, "out", torch.arange(channels)[:, None])], [reason], channels)


def _widest(model: nn.Module) -> int:
    """The most features any layer of ``model`` reads or writes: no group's index list legitimately exceeds it."""
    widths = [1]
    for module in model.modules():
        for name in ("in_features", "out_features", "in_channels", "out_channels", "embedding_dim", "num_embeddings"):
            value = getattr(module, name, None)
            if isinstance(value, int):
                widths.append(value)
    return max(widths)


class UntraceableGroup(RuntimeError):
    """Torch-Pruning's tracing of one group does not close (see ``MAX_GROUP_DEPS_PER_NODE``)."""


def _traced_group(graph: tp.DependencyGraph, module: nn.Module, pruner, idxs: list[int], index_limit: int):
    """``graph.get_pruning_group`` for ``module``'s output channels ``idxs``, bounded (``index_limit``: indices per dependency).

    Torch-Pruning builds the group in a local ``Group()``; for the call its name is bound to
    a subclass that raises ``UntraceableGroup`` past the bound (analysis runs one model at a
    time per process).
    """
    limit = MAX_GROUP_DEPS_PER_NODE * max(len(graph.module2node), 1)

    class BoundedGroup(tp_graph.Group):
        def add_dep(self, dep, idxs) -> None:
            if len(self) >= limit:
                raise UntraceableGroup(f"its tracing passed {limit} dependencies without closing (a loop of index mappings)")
            if len(idxs) > index_limit:
                raise UntraceableGroup(f"its index mapping grew past {index_limit} indices, more than any layer has "
                                       "(reshapes that map back onto themselves, e.g. Swin's window partition)")
            super().add_dep(dep, idxs)

    original, tp_graph.Group = tp_graph.Group, BoundedGroup
    try:
        return graph.get_pruning_group(module, pruner.prune_out_channels, idxs)
    finally:
        tp_graph.Group = original


def _single_channel_reach(graph: tp.DependencyGraph, module: nn.Module, pruner, channels: int,
                          index_limit: int) -> list[dict[tuple[int, bool], set[int]]]:
    """What each root channel alone reaches: its own group's indices per (module, is_out).

    The full group's index lists do not say which index belongs to which channel once a
    channel feeds several (a concat of a layer with a copy of it, as in a ghost module):
    Torch-Pruning lists them in concat order. One group per channel does (0.4 ms each).
    """
    reach = []
    for channel in range(channels):
        found: dict[tuple[int, bool], set[int]] = {}
        for item in _traced_group(graph, module, pruner, [channel], index_limit).items:
            key = (id(item.dep.target.module), graph.is_out_channel_pruning_fn(item.dep.handler))
            found.setdefault(key, set()).update(int(i) for i in item.idxs)
        reach.append(found)
    return reach


def _paired_channels(reach: list[dict[tuple[int, bool], set[int]]], root: tuple[int, bool], channels: int) -> list[list[int]] | None:
    """The root's output channels grouped by what pruning one of them takes along, if each takes k > 1 of them.

    Pruning channel ``c`` of the conv before a GLU removes channel ``c`` of the gate's output,
    so Torch-Pruning also removes channel ``c + C`` of the conv (the other half). Such
    channels always go together: they are one channel of the unit. None when every channel
    goes alone, or when the classes are uneven or do not reach the same layers.
    """
    own = [tuple(sorted(found.get(root, ()))) for found in reach]
    if all(len(mine) <= 1 for mine in own):
        return None
    pairs = sorted(set(own))
    if len({len(pair) for pair in pairs}) != 1 or sorted(c for pair in pairs for c in pair) != list(range(channels)):
        return None
    if any(reach[c] != reach[pair[0]] for pair in pairs for c in pair):
        return None
    return [list(pair) for pair in pairs]


def _indices_per_channel(idxs: list[int], key: tuple[int, bool], channels: int, reach) -> torch.Tensor | None:
    """(C, k) indices of a module that each root channel feeds, or None if they do not split k per channel."""
    if reach is None:  # every module of the group maps one index per channel, in channel order
        return torch.tensor(idxs, dtype=torch.long).reshape(channels, 1)
    rows = [sorted(r.get(key, ())) for r in reach]
    if len({len(row) for row in rows}) != 1 or not rows[0] or sorted(i for row in rows for i in row) != sorted(idxs):
        return None
    return torch.tensor(rows, dtype=torch.long)


def few_names(names: list[str], shown: int = 3) -> str:
    """Up to ``shown`` names, then "and N more": a problem message stays one readable line."""
    names = list(dict.fromkeys(names))
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _per_head(norm: nn.Module, channels: int) -> bool:
    """Could ``norm`` normalise each head of these channels on its own (a qk-norm over the head width)?

    Torch-Pruning maps the group's channels straight onto it, past its width; whether whole
    heads really leave it whole is what the trial prune then checks (search mode leaves it
    unmasked, export unsliced).
    """
    width = channel_count(norm) if maskable(norm) else 0
    return 1 < width < channels and channels % width == 0


def _channel_count(module: nn.Module, is_out: bool) -> int:
    """Output (or input) channels of a layer or norm: the range its channel indices must lie in."""
    if isinstance(module, nn.Linear):
        return module.out_features if is_out else module.in_features
    if isinstance(module, CONVS + (OutputMajorEmbedding,)):
        return module.out_channels if is_out or module.groups == module.in_channels else module.in_channels
    if maskable(module):  # a norm, perhaps without affine parameters
        return channel_count(module)
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    return sum(p.numel() for p in module.parameters(recurse=False))


def claim(info: GroupInfo, claimed: dict[tuple[str, str], tuple[set[int], int]], index: int, taken: set[str]) -> None:
    """Give every parameter slice to one unit only: a slice an earlier unit owns leaves this group.

    Overlapping groups arise where Torch-Pruning's groups are not a partition (channels
    split by a concat and joined again): counting a slice twice would double its cost, and
    pruning it from two units would not be what either unit's masks describe.
    """
    kept, shared = [], []
    for target in info.targets:
        key, channels = (target.module, target.role), set(target.indices.flatten().tolist())
        owned, owner = claimed.get(key, (set(), index))
        if owned & channels or (target.role == "out" and target.module in taken):
            if owner != index:
                shared.append(f"{target.module} (unit {owner})")
            if target.module in info.out_layers:
                info.out_layers.remove(target.module)
            info.fp32.pop(target.module, None)
            continue
        claimed[key] = (owned | channels, index)
        kept.append(target)
    for name, (channels, _) in list(info.fp32.items()):
        owned, owner = claimed.get((name, "norm"), (set(), index))
        if owned & channels and owner != index:
            del info.fp32[name]
        else:
            claimed[(name, "norm")] = (owned | channels, index)
    info.targets = kept
    if shared:
        info.problems.append(f"it shares channels with earlier units: {few_names(shared)}")

"""Attention whose heads can be pruned: ``nn.MultiheadAttention`` as four Linears, and head
counts that follow their pruned projections.

PyTorch's MultiheadAttention (used by ``nn.Transformer*`` layers and torchvision's ViT) packs
q/k/v into one ``in_proj_weight`` Parameter and calls ``out_proj`` functionally, so no
Linear of it ever runs a forward: analysis would leave the largest layers of a transformer
in fp32. ``SplitAttention`` computes the same function from separate q, k, v and out
Linears with explicit ops (which Torch-Pruning traces into whole-head groups). Every stage
works on a private copy (``surgery.plain_copy``), so the user's model keeps its module.

Most public attention code keeps its head count as an attribute it reshapes by (timm's
``Attention``: ``qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)``, then
``reshape(B, N, self.attn_dim)``; vit-pytorch's ``heads``; Whisper's ``n_head``; transformers'
``num_attention_heads`` and ``all_head_size``, which its own ``prune_heads`` rewrites). Pruning
whole heads from the projections leaves that count stale and the forward fails, so
``follow_pruned_heads`` rewrites it after every physical prune, as Torch-Pruning's examples do
by hand for timm. Analysis's trial prune checks the result against masking like any unit.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn


class SplitAttention(nn.Module):
    """Multi-head attention from separate q/k/v/out Linears; ``nn.MultiheadAttention``'s call signature.

    The head count follows the q projection's width (``q.out_features // head_dim``), so a
    model with pruned heads runs unchanged.
    """

    # no packed projection: nn.TransformerEncoderLayer's fused fast path checks these and is skipped
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, batch_first: bool, bias: bool = True, dropout: float = 0.0,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self.dropout = dropout  # on the attention weights, in training mode (recovery), as MultiheadAttention does
        self.q, self.k, self.v, self.out_proj = (nn.Linear(width or embed_dim, embed_dim, bias=bias)
                                                 for width in (embed_dim, kdim, vdim, embed_dim))

    @property
    def num_heads(self) -> int:
        return self.q.out_features // self.head_dim

    @classmethod
    def from_module(cls, attention: nn.MultiheadAttention) -> "SplitAttention":
        """The same attention, its packed (or, with ``kdim``/``vdim``, separate) weights copied into the four Linears."""
        split = cls(attention.embed_dim, attention.num_heads, attention.batch_first, attention.in_proj_bias is not None,
                    attention.dropout, attention.kdim, attention.vdim)
        if attention._qkv_same_embed_dim:
            weights = attention.in_proj_weight.detach().chunk(3)
        else:
            weights = tuple(getattr(attention, f"{p}_proj_weight").detach() for p in "qkv")
        biases = attention.in_proj_bias.detach().chunk(3) if attention.in_proj_bias is not None else (None,) * 3
        with torch.no_grad():
            for layer, weight, bias in zip((split.q, split.k, split.v), weights, biases):
                layer.weight.copy_(weight)
                if bias is not None:
                    layer.bias.copy_(bias)
            split.out_proj.weight.copy_(attention.out_proj.weight)
            if attention.out_proj.bias is not None:
                split.out_proj.bias.copy_(attention.out_proj.bias)
        return split.train(attention.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                need_weights: bool = True, attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, targets, sources, heads = query.shape[0], query.shape[1], key.shape[1], self.num_heads

        def split(t: torch.Tensor, length: int) -> torch.Tensor:
            return t.view(batch, length, heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(query), targets), split(self.k(key), sources), split(self.v(value), sources)
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(targets, sources, dtype=torch.bool, device=scores.device).triu(1)
        for mask in (attn_mask.view(batch, -1, targets, sources) if attn_mask is not None and attn_mask.dim() == 3 else attn_mask,
                     key_padding_mask[:, None, None, :] if key_padding_mask is not None else None):
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1)
        out = self.out_proj((F.dropout(weights, self.dropout, self.training) @ v).transpose(1, 2).reshape(batch, targets, heads * self.head_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights


def splittable(module: nn.Module) -> bool:
    """Whether ``module`` is a MultiheadAttention ``SplitAttention`` reproduces.

    Left as is (and so left untouched by compression): attention with ``add_bias_kv`` or
    ``add_zero_attn`` (learned or zero key/value rows appended inside the op).
    """
    return isinstance(module, nn.MultiheadAttention) and module.bias_k is None and not module.add_zero_attn


HEAD_ATTRIBUTES = ("num_heads", "heads", "n_heads", "n_head", "num_attention_heads", "num_key_value_heads", "attn_dim", "all_head_size")
"""Integer attributes of an attention module that count its heads, or their total width (heads x head width)."""


def head_attributes(module: nn.Module) -> dict[str, int]:
    """``module``'s own integer ``HEAD_ATTRIBUTES`` (instance attributes: ``SplitAttention``'s property is computed)."""
    own = vars(module)
    return {name: own[name] for name in HEAD_ATTRIBUTES if type(own.get(name)) is int}


def follow_pruned_heads(model: nn.Module, pruned: list[tuple[list[str], Fraction]]) -> None:
    """Scale each head attribute by the fraction of channels kept by the unit that pruned its heads.

    ``pruned``: per pruned unit, the modules whose outputs it pruned and the fraction of its
    channels it kept. A unit prunes a module's heads when every output it prunes is one of
    that module's own layers (q, k, v or a fused qkv, a gate, a per-head norm): pruning ``h``
    of ``H`` whole heads keeps ``(H - h) / H`` of them. A residual stream also reaches in (the
    output projection writes it, the qkv reads it) but prunes outputs elsewhere too, and a
    unit inside a submodule (timm's relative-position MLP) is not the heads', so neither
    rescales a count (before v0.16 the projections' widths decided, and a pruned stream passed
    for pruned heads). A module two such units prune differently, or whose count would not stay whole,
    is left as it is: its forward then disagrees with masking, and analysis's trial prune
    leaves those heads quantize-only.
    """
    for name, module in model.named_modules():
        counts = head_attributes(module)
        if not counts:
            continue
        fractions = {kept for outputs, kept in pruned if outputs and all(o.rpartition(".")[0] == name for o in outputs)}
        if len(fractions) != 1:
            continue
        fraction = fractions.pop()
        for attribute, value in counts.items():
            if (value * fraction).denominator == 1:
                setattr(module, attribute, int(value * fraction))


def key_value_projections(module: nn.Module) -> tuple[str, str, str, str] | None:
    """The (query, key, value, output) Linears' names of a transformers-style attention whose key/value heads each serve
    ``num_key_value_groups`` query heads of ``head_dim`` channels, or None.

    Grouped-query attention (Llama, Mistral, Qwen2/3 and Gemma with fewer key/value heads than
    query heads) repeats each key/value head for ``n`` query heads, which Torch-Pruning's one-to-one
    pairing of query and key channels cannot express (past the keys' width: quantize-only);
    with ``n = 1`` (Phi's and StableLM's attention) its trace loops on their partial rotary
    embedding. ``groups.attention_group`` builds the unit of either.
    """
    out = next((name for name in ("o_proj", "dense") if isinstance(getattr(module, name, None), nn.Linear)), None)
    names = ("q_proj", "k_proj", "v_proj", out)
    repeats, head_dim = getattr(module, "num_key_value_groups", None), getattr(module, "head_dim", None)
    if out is None or not all(isinstance(getattr(module, n, None), nn.Linear) for n in names) or type(repeats) is not int or type(head_dim) is not int:
        return None
    q, k, v, o = (getattr(module, n) for n in names)
    fits = k.out_features == v.out_features and q.out_features == repeats * k.out_features == o.in_features
    return names if repeats >= 1 and fits and k.out_features % head_dim == 0 else None


def interleaved_qkv(module: nn.Module) -> tuple[str, str, int] | None:
    """(fused projection, output projection, head width) of GPT-NeoX's attention (Pythia), or None.

    One ``query_key_value`` Linear holds, head after head, that head's query, key and value
    (``view(..., -1, 3 * head_size)``, then ``chunk(3)``), and ``dense`` reads the heads back;
    no head count is stored. Torch-Pruning cannot map the interleaving (quantize-only until
    v0.17); ``groups.attention_group`` builds its unit of whole heads.
    """
    fused, out, head_dim = getattr(module, "query_key_value", None), getattr(module, "dense", None), getattr(module, "head_size", None)
    if isinstance(fused, nn.Linear) and isinstance(out, nn.Linear) and type(head_dim) is int and head_dim > 0 \
            and fused.out_features == 3 * out.in_features and out.in_features % head_dim == 0:
        return "query_key_value", "dense", head_dim
    return None


def explicit_attention_layers(model: nn.Module) -> dict[str, str]:
    """Projection layer names -> their attention module's name, for every attention ``groups.attention_group`` builds
    the unit of (``key_value_projections``, ``interleaved_qkv``), not Torch-Pruning."""
    found = {}
    for name, module in model.named_modules():
        if layers := key_value_projections(module):
            found.update({f"{name}.{layer}": name for layer in layers[:3]})
        elif layers := interleaved_qkv(module):
            found[f"{name}.{layers[0]}"] = name
    return found

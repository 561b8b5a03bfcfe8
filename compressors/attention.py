"""``nn.MultiheadAttention`` as four Linears, so its projections can be quantized and pruned.

PyTorch's MultiheadAttention (used by ``nn.Transformer*`` layers and torchvision's ViT) packs
q/k/v into one ``in_proj_weight`` Parameter and calls ``out_proj`` functionally, so no
Linear of it ever runs a forward: analysis would leave the largest layers of a transformer
in fp32. ``SplitAttention`` computes the same function from separate q, k, v and out
Linears with explicit ops (which Torch-Pruning traces into whole-head groups). Every stage
works on a private copy (``surgery.plain_copy``), so the user's model keeps its module.
"""

from __future__ import annotations

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

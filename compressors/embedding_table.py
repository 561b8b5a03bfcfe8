"""``nn.Embedding`` with its table stored dimension first, so it is compressed like a layer.

Token and position embeddings are most of a small language model's size (a 2-layer BERT
with a 1,000-token vocabulary at width 64: 49% of its parameters), so leaving them in fp32
makes every size budget below that share infeasible. Every stage here reads dim 0 of a
layer's weight as its output channels: per-output-channel quantization scales, masking and
ranking output rows, the saved codes and the ONNX ``DequantizeLinear`` axis. A table stored
``(num_embeddings, embedding_dim)`` has its output channels (the embedding dimensions) on
dim 1. ``OutputMajorEmbedding`` holds the same table as ``(embedding_dim, num_embeddings)``
and looks rows up in its transpose, so each embedding dimension is one output channel: it
is quantized with one scale per dimension and pruned by dimension, which is what
Torch-Pruning's own embedding pruner removes. Like ``SplitAttention`` it only ever replaces
layers in a private copy (``surgery.plain_copy``).

A lookup does no multiply-accumulate: the layer's MACs and BitOps are 0, its size counts
(``LayerSpec.is_lookup``), its latency and energy are not modelled (it reads one row per
token), and its input (token ids) is never quantized.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn


class OutputMajorEmbedding(nn.Module):
    """An ``nn.Embedding`` whose ``weight`` is ``(embedding_dim, num_embeddings)``.

    It keeps the attributes analysis reads from a layer (``in_channels``: the vocabulary,
    ``out_channels``: the embedding width), the lookup's ``padding_idx``, and ``nn.Embedding``'s
    own names for the two sizes, which model code reads (Whisper's encoder looks up
    ``arange(embed_positions.num_embeddings)``).
    """

    lookup = True
    groups = 1

    def __init__(self, source: nn.Embedding) -> None:
        super().__init__()
        self.in_channels, self.out_channels = source.num_embeddings, source.embedding_dim
        self.padding_idx = source.padding_idx
        self.weight = nn.Parameter(source.weight.detach().t().clone(), requires_grad=source.weight.requires_grad)
        self.bias = None
        self.train(source.training)

    @property
    def num_embeddings(self) -> int:
        return self.in_channels

    @property
    def embedding_dim(self) -> int:
        return self.out_channels

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight.t(), self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels} (table stored dimension-major)"


class OutputMajorEmbeddingPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's pruner for ``OutputMajorEmbedding``: its dimensions are dim 0; token ids are never pruned."""

    def prune_out_channels(self, layer: OutputMajorEmbedding, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.out_channels)) - set(int(i) for i in idxs))
        layer.out_channels = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        return layer

    def prune_in_channels(self, layer: OutputMajorEmbedding, idxs: Sequence[int]) -> nn.Module:
        return layer  # its input is token ids: no producer's channels reach it

    def get_out_channels(self, layer: OutputMajorEmbedding) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: OutputMajorEmbedding) -> None:
        return None


def convertible(module: nn.Module) -> bool:
    """A plain lookup table (``max_norm`` renormalises the user's rows in place at every call: left alone)."""
    return type(module) is nn.Embedding and module.max_norm is None

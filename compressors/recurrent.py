"""``nn.LSTM`` and ``nn.GRU`` as Linears stepped over time, so their weights can be quantized.

The built-in recurrent layers keep their weights as packed Parameters (``weight_ih_l0``,
``weight_hh_l0``, ...) that one fused kernel reads: no Linear of them ever runs a forward, so
analysis would leave them in fp32, often the bulk of a speech or sensor model.
``UnrolledRNN`` computes the same function with one input Linear and one recurrent Linear
per layer and direction: the input Linear runs on the whole sequence at once, the recurrent
one once per time step (priced per call: ``graph._trace_layers`` sums a layer's calls). Every
stage works on a private copy (``surgery.plain_copy``); the user's model keeps its layer.
Torch-Pruning cannot follow the gates, so these units are quantize-only (their reason says why).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn

class UnrolledRNN(nn.Module):
    """An ``nn.LSTM`` / ``nn.GRU`` (its call signature and outputs) from per-layer, per-direction Linears.

    ``ih_l{k}[_reverse]`` maps the layer's input to the gates (PyTorch's gate order, its
    ``bias_ih`` as bias); ``hh_l{k}[_reverse]`` maps the hidden state (``bias_hh``); an LSTM
    with ``proj_size`` adds ``hr_l{k}[_reverse]``, the projection of each step's hidden state
    (``weight_hr``, no bias).
    """

    def __init__(self, source: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        self.mode = type(source).__name__
        self.hidden_size, self.num_layers = source.hidden_size, source.num_layers
        self.batch_first, self.bidirectional = source.batch_first, source.bidirectional
        self.dropout = source.dropout  # between layers, in training mode, as the built-in applies it
        self.proj_size = getattr(source, "proj_size", 0)
        for name in self._directions():
            for part in ("ih", "hh", "hr") if self.proj_size else ("ih", "hh"):
                weight = getattr(source, f"weight_{part}_{name}")
                bias = getattr(source, f"bias_{part}_{name}") if source.bias and part != "hr" else None
                layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
                with torch.no_grad():
                    layer.weight.copy_(weight)
                    if bias is not None:
                        layer.bias.copy_(bias)
                self.add_module(f"{part}_{name}", layer)
        self.train(source.training)

    def _directions(self) -> list[str]:
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        return [f"l{layer}{suffix}" for layer in range(self.num_layers) for suffix in suffixes]

    def forward(self, x: torch.Tensor, hx=None):
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1 if not self.batch_first else 0)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (N, T, features) from here on
        directions = 2 if self.bidirectional else 1
        states = self._initial_states(x, hx, batched, directions)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                name = f"l{layer}{'_reverse' if direction else ''}"
                index = layer * directions + direction
                sequence, final = self._run(x, getattr(self, f"ih_{name}"), getattr(self, f"hh_{name}"),
                                            getattr(self, f"hr_{name}", None), tuple(s[index] for s in states),
                                            reverse=bool(direction))
                outputs.append(sequence)
                finals.append(final)
            x = torch.cat(outputs, dim=-1)
            if self.training and self.dropout and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout)
        out = x if self.batch_first else x.transpose(0, 1)
        stacked = tuple(torch.stack(parts) for parts in zip(*finals))
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            stacked = tuple(s.squeeze(1) for s in stacked)
        return out, (stacked if self.mode == "LSTM" else stacked[0])

    def _initial_states(self, x: torch.Tensor, hx, batched: bool, directions: int) -> tuple[torch.Tensor, ...]:
        count = 2 if self.mode == "LSTM" else 1
        if hx is None:
            shape = (self.num_layers * directions, x.shape[0])
            zeros = x.new_zeros(*shape, self.proj_size or self.hidden_size), x.new_zeros(*shape, self.hidden_size)
            return zeros[:count]
        states = hx if isinstance(hx, tuple) else (hx,)
        return tuple(s if batched else s.unsqueeze(1) for s in states)

    def _run(self, x: torch.Tensor, ih: nn.Linear, hh: nn.Linear, hr: nn.Linear | None,
             state: tuple[torch.Tensor, ...], reverse: bool):
        # the whole sequence at once, then one tensor per step: unbind's backward stacks the steps'
        # gradients once, where indexing gates_in[:, t] would zero-fill a full-sequence gradient per step
        gates_in = ih(x).unbind(dim=1)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        h, c = state[0], state[-1]
        outputs = [None] * x.shape[1]
        for t in steps:
            gates_h = hh(h)
            if self.mode == "LSTM":
                i, f, g, o = (gates_in[t] + gates_h).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                if hr is not None:
                    h = hr(h)
            else:  # GRU: the reset gate scales the recurrent candidate term, bias included
                x_r, x_z, x_n = gates_in[t].chunk(3, dim=-1)
                h_r, h_z, h_n = gates_h.chunk(3, dim=-1)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            outputs[t] = h
        return torch.stack(outputs, dim=1), ((h, c) if self.mode == "LSTM" else (h,))


class RecurrentPruner(tp.pruner.function.BasePruningFunc):
    """Makes ``UnrolledRNN`` one opaque node of Torch-Pruning's graph (its time loop stacks and
    slices tensors Torch-Pruning's index mapping cannot follow). Pruning through it is refused,
    so the layers feeding it and reading it keep their channels (quantize-only)."""

    def prune_out_channels(self, layer: UnrolledRNN, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError("pruning a recurrent layer's hidden units would cut through its gates")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: UnrolledRNN) -> int:
        return (layer.proj_size or layer.hidden_size) * (2 if layer.bidirectional else 1)

    def get_in_channels(self, layer: UnrolledRNN) -> int:
        return layer.ih_l0.in_features


def unrollable(module: nn.Module) -> bool:
    """An ``nn.LSTM`` or ``nn.GRU`` (exact types: subclasses may change the recurrence)."""
    return type(module) in (nn.LSTM, nn.GRU)

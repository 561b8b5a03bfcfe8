"""``nn.MultiheadAttention`` is compressed through ``SplitAttention``: its projections are
quantized and pruned by whole heads, and every stage agrees on the result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metacompress import Plan, export
from metacompress.compressors import SearchModel, build_graph
from metacompress.compressors.attention import SplitAttention, splittable
from metacompress.compressors.export import load_compressed, save_compressed
from metacompress.compressors.onnx_export import export_onnx, onnx_agreement
from metacompress.compressors.surgery import plain_copy


class Encoder(nn.Module):
    """Two built-in encoder layers (4 heads of 4 channels) between a stem and a head."""

    def __init__(self, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.stem = nn.Linear(6, 16)
        layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.encoder(h if self.batch_first else h.transpose(0, 1))
        return self.head((h if self.batch_first else h.transpose(0, 1)).mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("kdim, vdim", [(None, None), (8, 12)])
def test_split_attention_computes_what_multihead_attention_computes(batch_first, masks, kdim, vdim):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=vdim).eval()
    split = SplitAttention.from_module(attention).eval()
    q, k, v = torch.randn(3, 5, 16), torch.randn(3, 7, kdim or 16), torch.randn(3, 7, vdim or 16)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    kwargs = {}
    if masks:
        kwargs = {"key_padding_mask": torch.tensor([[False] * 6 + [True]] * 3), "attn_mask": torch.rand(5, 7) < 0.2}
    for average in (True, False):
        expected, expected_weights = attention(q, k, v, average_attn_weights=average, **kwargs)
        got, weights = split(q, k, v, average_attn_weights=average, **kwargs)
        assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(weights, expected_weights, atol=1e-6)


def test_attention_with_appended_key_value_rows_is_left_as_is():
    odd = nn.Sequential(nn.MultiheadAttention(16, 4, add_bias_kv=True), nn.MultiheadAttention(16, 4, add_zero_attn=True))
    assert not any(splittable(m) for m in odd)
    assert all(isinstance(m, nn.MultiheadAttention) for m in plain_copy(odd))


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_projections_are_planned_pruned_by_whole_heads_and_agree_everywhere(tmp_path, batch_first):
    torch.manual_seed(0)
    model, x = Encoder(batch_first).eval(), torch.randn(24, 5, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = build_graph(model, x)
    attention_units = [u for u in graph.spec.units if u.name.endswith("self_attn.q+2")]
    assert len(attention_units) == 2 and not graph.spec.unsupported
    assert all(sorted(u.layers) == [u.name[:-2].replace(".q", f".{p}") for p in "kqv"] and u.channel_step == 4 and u.prunable
               for u in attention_units)

    plan = Plan.uniform(graph.spec, prune=0.5, w_bits=6, a_bits=6)
    searched = SearchModel(model, graph, [x]).apply(plan)(x)
    compressed = export(model, plan, x, [x], graph=graph)
    assert (compressed(x) - searched).abs().max().item() < 1e-4  # masks and real pruning agree
    first = compressed.encoder.layers[0].self_attn
    assert first.num_heads == 2 and first.q.out_features == first.k.out_features == first.v.out_features == 8
    removed = graph.units[attention_units[0].index].removed_channels(attention_units[0], 8)
    assert len(removed.div(4, rounding_mode="floor").unique()) == 2  # two whole heads, not channels spread over four

    save_compressed(compressed, tmp_path / "saved")
    reloaded = load_compressed(tmp_path / "saved", Encoder(batch_first))
    assert torch.allclose(reloaded(x), compressed(x), atol=1e-6)
    agreement = onnx_agreement(compressed, export_onnx(compressed, tmp_path / "m.onnx", x[:4]), x, compressed(x).argmax(1))
    assert agreement["difference_points"] == 0

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)


class CrossAttention(nn.Module):
    """Queries from one projection, keys and values of other widths (``kdim``/``vdim``) from two more."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.keys, self.values = nn.Linear(6, 16), nn.Linear(6, 8), nn.Linear(6, 12)
        self.attention = nn.MultiheadAttention(16, 4, kdim=8, vdim=12, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.query(x), self.keys(x), self.values(x))[0].mean(1))


def test_attention_with_its_own_key_and_value_widths_is_compressed_saved_and_exported(tmp_path):
    torch.manual_seed(0)
    model, x = CrossAttention().eval(), torch.randn(24, 5, 6)
    graph = build_graph(model, x)
    assert {"attention.q", "attention.k", "attention.v", "attention.out_proj"} <= {layer.name for layer in graph.spec.layers}
    assert not graph.spec.unsupported
    # 8-bit activations: at 6 bits the masked and the physically pruned sums can round one activation code apart
    plan = Plan.uniform(graph.spec, prune=0.5, w_bits=6, a_bits=8)
    compressed = export(model, plan, x, [x], graph=graph)
    assert (compressed(x) - SearchModel(model, graph, [x]).apply(plan)(x)).abs().max().item() < 1e-4
    save_compressed(compressed, tmp_path / "saved")
    assert torch.allclose(load_compressed(tmp_path / "saved", CrossAttention())(x), compressed(x), atol=1e-6)
    agreement = onnx_agreement(compressed, export_onnx(compressed, tmp_path / "m.onnx", x[:4]), x, compressed(x).argmax(1))
    assert agreement["difference_points"] == 0

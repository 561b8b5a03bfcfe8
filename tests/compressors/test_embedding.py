"""Embedding tables are compressed: quantized per dimension, pruned by dimension, priced as lookups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors.cost import ACT_QPARAM_BITS, FP32_BITS, count_bitops, layer_costs, size_bits
from metacompress.compressors.embedding_table import OutputMajorEmbedding
from metacompress.compressors.hardware import get_hardware
from metacompress.compressors.onnx_export import onnx_logits, session, to_onnx

VOCAB, WIDTH, LENGTH, CLASSES = 300, 24, 10, 3


class BagOfEmbeddings(nn.Module):
    """fastText-style: the table's width is a prunable channel group (no norm across it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH, padding_idx=0)
        self.fc = nn.Linear(WIDTH, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.embed(ids).mean(1))))


def ids(samples: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (samples, LENGTH), generator=torch.Generator().manual_seed(seed))


def bag_task(samples: int = 240):
    torch.manual_seed(0)
    model = BagOfEmbeddings().eval()
    x = ids(samples)
    with torch.no_grad():
        labels = model(x).argmax(-1)
    return model, x, mc.splits_from_arrays(x.numpy(), labels.numpy())


def test_the_dimension_major_table_looks_up_the_same_rows_and_keeps_padding_idx():
    source = nn.Embedding(VOCAB, WIDTH, padding_idx=0)
    table = OutputMajorEmbedding(source)
    x = ids(4)
    assert table.weight.shape == (WIDTH, VOCAB)
    assert torch.equal(table(x), source(x))
    table(x).sum().backward()
    assert not table.weight.grad[:, 0].any()  # the padding row gets no gradient, as in nn.Embedding


def test_an_embedding_is_a_unit_with_no_macs_whose_size_counts_per_dimension_scales_and_no_activation_qparams():
    model, x, _ = bag_task()
    spec = mc.analyze(model, x[:8])
    table = spec.layers[0]
    assert (table.name, table.kind, table.in_channels, table.out_channels) == ("embed", "embedding", VOCAB, WIDTH)
    assert spec.units[0].layers == ("embed",) and spec.units[0].prunable
    assert not spec.unsupported and spec.macs() == spec.layers[1].macs(WIDTH, 32) + spec.layers[2].macs(32, CLASSES)
    kept = [WIDTH // 2, 32, CLASSES]
    w_bits, a_bits = [4, 8, 8], [8, 8, 8]
    fc_and_head = size_bits(spec, kept, w_bits) - (VOCAB * (WIDTH // 2) * 4 + (WIDTH // 2) * FP32_BITS)
    assert fc_and_head == (32 * 12 + 3 * 32) * 8 + (32 + 32 + 3 + 3) * FP32_BITS + 2 * ACT_QPARAM_BITS
    latency = layer_costs(spec, "latency", kept, w_bits, a_bits, get_hardware("m7-mcu"))
    assert latency[0] == 0.0 and latency[1] > 0.0  # a lookup's time is not modelled
    assert count_bitops(spec, kept, w_bits, a_bits) == spec.layers[1].macs(12, 32) * 64 + spec.layers[2].macs(32, CLASSES) * 64


def test_a_size_budget_prunes_and_quantizes_the_table_exports_reloads_and_runs_in_onnxruntime(tmp_path):
    model, x, data = bag_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="size=0.15", planner=HawqPlanner(), finetune_steps=5)
    assert result.summary["within_budget"] and result.summary["untouched_layers"] == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    decision = result.plan.decisions[0]
    table = result.model.embed
    assert isinstance(table, OutputMajorEmbedding) and table.weight.shape == (decision.kept_channels, VOCAB)
    assert decision.w_bits < 8 and result.model.metacompress_weight_bits["embed"] == decision.w_bits
    assert not hasattr(table, "input_quantizer")  # token ids are never quantized
    codes = table.weight / table.weight_scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 2 ** (decision.w_bits - 1) - 1

    mc.save_compressed(result.model, tmp_path / "out")
    again = mc.load_compressed(tmp_path / "out", BagOfEmbeddings())
    with torch.no_grad():
        assert torch.equal(again(x[:16]), result.model(x[:16]))
        graph = session(to_onnx(result.model, x[:8]).SerializeToString(), optimize=False)
        assert torch.allclose(onnx_logits(graph, x[:32]), result.model(x[:32]), atol=1e-5)


class ReadsTableAttributes(nn.Module):
    """Model code that reads a table's attributes, as Whisper reads ``embed_positions.num_embeddings``."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(self.table.num_embeddings)[: ids.shape[1]]
        scale = 2.0 if self.table.sparse else 1.0  # an attribute the rewritten table does not keep
        return self.head(scale * (self.table(ids) + self.table(positions)).mean(dim=1))


def test_a_rewritten_table_keeps_its_sizes_and_a_failure_of_the_copy_is_named_as_ours():
    table = OutputMajorEmbedding(nn.Embedding(10, 4))
    assert (table.num_embeddings, table.embedding_dim) == (10, 4)
    ids = torch.randint(0, 10, (8, 5))
    with pytest.raises(mc.errors.UnsupportedModel, match=r"the model runs the example input, but metacompress's private copy .*"
                                                          r"'sparse'.*differs in table, .*metacompress defect"):
        mc.analyze(ReadsTableAttributes().eval(), ids)

"""ONNX export: the QDQ graph computes what the fake-quant model computes, and runs in onnxruntime."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from metacompress import Plan, analyze, export
from metacompress.compressors.onnx_export import _first_line, export_onnx, layer_bits, onnx_agreement, onnx_logits, session, to_onnx
from metacompress.envs.zoo import Split, build_model, load_dataset
from metacompress.envs.zoo.training import train_model
from metacompress.errors import MetacompressError, RunExists, UnsupportedLayer
from tiny_models import TinyMLP, example_input, trained_like

# (family, width, depth): every zoo family, small enough to train on digits in about a second
ZOO_FAMILIES = [("mlp", 32, 1), ("cnn1d", 8, 1), ("vgg", 8, 1), ("resnet", 8, 1), ("mobilenetv2", 8, 1), ("transformer", 16, 1)]


def _mixed_plan(spec, w_bits: int, a_bits: int, prune: float = 0.5) -> Plan:
    """``prune`` of every prunable unit's channels removed; alternating 8-bit and (w_bits, a_bits) units."""
    half = Plan.uniform(spec, prune=prune)
    low = [i % 2 == 1 and not unit.frozen for i, unit in enumerate(spec.units)]
    return Plan.from_kept(spec, half.kept, [w_bits if lo else 8 for lo in low], [a_bits if lo else 8 for lo in low])


@pytest.mark.parametrize("bits", [(8, 8), (3, 5)], ids=["w8a8", "w3a5"])
def test_graph_computes_the_fake_quant_model(tiny, bits):
    """Without runtime fusions the graph is the PyTorch model: same codes, clips and QDQ pairs."""
    name, model, x = tiny
    spec = analyze(model, x)
    compressed = export(model, _mixed_plan(spec, *bits), x, [x])
    proto = to_onnx(compressed, x[:2])
    with torch.no_grad():
        expected = compressed(x)
    diff = (onnx_logits(session(proto.SerializeToString(), optimize=False), x) - expected).abs().amax(dim=1)
    # folding BatchNorm reorders float ops, so an input on a rounding tie may land one level over
    assert (diff < 1e-4).float().mean().item() >= 0.9
    assert diff.max().item() < 0.05 * expected.abs().max().item()
    w_bits, a_bits = layer_bits(proto)
    assert w_bits == compressed.metacompress_weight_bits
    codes = [init for init in proto.graph.initializer if init.name.endswith(".weight_codes")]
    assert len(codes) == len(w_bits) and all(c.data_type == onnx.TensorProto.INT8 for c in codes)
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization" and name != "transformer"]


def _digits_model(family: str, width: int, depth: int):
    data = load_dataset("digits")
    shape = (1, 64) if family == "cnn1d" else tuple(data.train.x.shape[1:])
    split = lambda s: Split(s.x.reshape((len(s.x),) + shape), s.y)  # noqa: E731
    train, test = split(data.train), split(data.test)
    torch.manual_seed(0)
    model = build_model(family, shape, 10, width, depth)
    # the transformer learns slowest: after 4 epochs it sits near 40% with most predictions on a
    # near-tie, so onnxruntime's fused integer kernels flip enough of them to move accuracy a point
    # on one CPU and not another; trained to ~75% it agrees exactly
    epochs = 12 if family == "transformer" else 4
    train_model(model, train, epochs=epochs, batch_size=64, lr=1e-2, weight_decay=0.0, generator=torch.Generator().manual_seed(0))
    return model.eval(), train, test


@pytest.mark.parametrize("family,width,depth", ZOO_FAMILIES, ids=[f[0] for f in ZOO_FAMILIES])
def test_onnxruntime_accuracy_matches_pytorch_on_each_zoo_family(family, width, depth, tmp_path):
    model, train, test = _digits_model(family, width, depth)
    spec = analyze(model, train.x[:8])
    compressed = export(model, _mixed_plan(spec, 5, 6, prune=0.25), train.x[:8], [train.x[:256]])
    path = export_onnx(compressed, tmp_path / "model.onnx", train.x[:1])
    check = onnx_agreement(compressed, path, test.x, test.y)
    assert check["torch_accuracy"] > 0.3  # 3x chance: a trained classifier, so agreement means something
    assert abs(check["difference_points"]) <= 0.5
    assert onnx_logits(session(path), test.x[:3]).shape == (3, 10)  # the batch dimension is dynamic


def test_existing_file_is_not_overwritten_without_the_flag(tmp_path):
    model = trained_like(TinyMLP())
    x = example_input(model)
    compressed = export(model, Plan.uniform(analyze(model, x)), x, [x])
    path = export_onnx(compressed, tmp_path / "model.onnx", x)
    before = path.read_bytes()
    with pytest.raises(RunExists, match="--overwrite"):
        export_onnx(compressed, path, x)
    assert path.read_bytes() == before
    export_onnx(compressed, path, x, overwrite=True)


class _Custom(nn.Module):
    """An activation built on an op with no ONNX equivalent (aten::special_erfcx)."""

    def forward(self, x):
        return torch.special.erfcx(x)


class _WithCustomLayer(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.custom = _Custom()

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.head(torch.relu(self.fc2(self.custom(x))))


class _BatchFixedInTrace(TinyMLP):
    """Reads the batch size into a Python number, as braindecode's ATCNet attention does."""

    def forward(self, x):
        (rows,) = torch.split(x.flatten(1), [int(x.shape[0])])
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(rows)))))


@pytest.mark.parametrize("architecture, reason", [
    (_WithCustomLayer, r"layer 'custom' \(_Custom\) cannot be expressed in ONNX opset 17"),
    # traced at batch 4, then run by onnxruntime at 5
    (_BatchFixedInTrace, r"batch size 5: .*Split.*traced batch size 4 only"),
])
def test_a_model_onnx_cannot_run_is_refused_with_its_reason_before_writing(tmp_path, architecture, reason):
    model = trained_like(architecture())
    x = example_input(model)
    compressed = export(model, Plan.uniform(analyze(model, x)), x, [x])
    with pytest.raises(UnsupportedLayer, match=reason):
        export_onnx(compressed, tmp_path / "model.onnx", x)
    assert not (tmp_path / "model.onnx").exists()


class _KeepsLastLogits(nn.Module):
    """A causal LM's head as transformers writes it: ``forward(x, logits_to_keep=0)`` slices the positions it scores."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x, logits_to_keep: int = 0, labels=None):
        return self.head(torch.relu(self.proj(x))[:, -logits_to_keep:])


def test_a_defaulted_forward_argument_is_a_constant_in_the_graph_not_an_input():
    model = trained_like(_KeepsLastLogits())
    x = torch.randn(16, 5, 4, generator=torch.Generator().manual_seed(0))
    compressed = export(model, Plan.uniform(analyze(model, x), w_bits=6, a_bits=6), x, [x])
    proto = to_onnx(compressed, x[:4])
    assert [i.name for i in proto.graph.input] == ["input"]  # logits_to_keep was traced as a second input
    with torch.no_grad():
        assert (onnx_logits(session(proto.SerializeToString(), optimize=False), x) - compressed(x)).abs().max() < 1e-5
    assert "forward" not in compressed.__dict__  # the export's own view of forward is gone afterwards


def test_a_refusal_names_the_op_the_exporter_was_translating_when_its_own_error_does_not():
    # torch's TorchScript exporter on transformers' MobileViTV2 at opset 18: the first line alone names nothing
    failure = RuntimeError("'NoneType' object is not subscriptable \n(Occurred when translating col2im).")
    assert _first_line(failure) == "'NoneType' object is not subscriptable (while translating col2im)"
    assert _first_line(RuntimeError("Exporting the operator 'aten::diff' to ONNX opset version 17 is not supported.")) == (
        "Exporting the operator 'aten::diff' to ONNX opset version 17 is not supported")


class _TokenConv(nn.Module):
    """A text model whose length is free: embedding, a conv over time, a per-position head."""

    def __init__(self, divide_by_traced_length: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)
        self.divide_by_traced_length = divide_by_traced_length

    def forward(self, ids):
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2))).transpose(1, 2)
        if self.divide_by_traced_length:  # len() is a Python number: the trace keeps the example's length
            return self.head(h.sum(1) / len(h[0]))
        return self.head(h)


def _token_model(**kwargs):
    model = trained_like(_TokenConv(**kwargs))
    ids = torch.randint(0, 20, (16, 6), generator=torch.Generator().manual_seed(0))
    return export(model, Plan.uniform(analyze(model, ids), w_bits=6, a_bits=6), ids, [ids]), ids


def test_a_dynamic_dimension_is_free_in_the_graph_and_checked():
    compressed, ids = _token_model()
    graph = session(to_onnx(compressed, ids[:4], dynamic_dims=[1]).SerializeToString(), optimize=False)
    longer = torch.randint(0, 20, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (onnx_logits(graph, longer) - compressed(longer)).abs().max() < 1e-5
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):  # without it, the length is the traced one
        onnx_logits(session(to_onnx(compressed, ids[:4]).SerializeToString(), optimize=False), longer)


def test_a_length_the_forward_code_fixes_in_the_trace_is_refused_as_dynamic():
    compressed, ids = _token_model(divide_by_traced_length=True)
    with pytest.raises(UnsupportedLayer, match="dynamic dim 1: the graph traced at size 6 does not compute the model at size 12"):
        to_onnx(compressed, ids[:4], dynamic_dims=[1])
    to_onnx(compressed, ids[:4])  # at its traced length it is exact


@pytest.mark.parametrize("dims", [[0], [2]], ids=["the-batch", "past-the-rank"])
def test_a_dynamic_dimension_the_input_does_not_have_is_refused(dims):
    compressed, ids = _token_model()
    with pytest.raises(MetacompressError, match=r"dynamic dims \[\d\] are not dimensions 1 to 1 of the input \(shape \(4, 6\)"):
        to_onnx(compressed, ids[:4], dynamic_dims=dims)

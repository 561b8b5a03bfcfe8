"""Deployment: an exported model as an ONNX QDQ graph that onnxruntime loads, runs and times.

The graph is the physically pruned model of ``export.export`` with a
QuantizeLinear/DequantizeLinear pair wherever the PyTorch model fake-quantizes:

- Weights: int8 initializers (symmetric, zero point 0, one scale per output channel)
  feeding a ``DequantizeLinear(axis=0)``. A BatchNorm that follows a conv is folded
  into that conv's per-channel scales and bias, which is exact because BatchNorm
  scales whole output channels; a negative BatchNorm scale flips the channel's codes.
- Activations: each quantized layer's input goes through a uint8 ``QuantizeLinear``
  with the layer's calibrated per-tensor scale and zero point, then ``DequantizeLinear``.
- Below 8 bits: the int8/uint8 containers hold only the layer's own lattice. Weights
  already lie on it; an activation gets a ``Clip`` to its ``2^b`` levels before the
  QuantizeLinear, so it computes what the fake quantizer computes. The bit-widths are
  recorded per layer in the model's metadata (``metacompress.weight_bits`` and
  ``metacompress.activation_bits``). int4 containers (opset 21) are not used: the
  onnxruntime CPU kernels run int4 weights by dequantizing them, so they save file
  size but no time, and fewer runtimes load them.

onnxruntime fuses ``DQ -> Conv/MatMul -> Q`` into integer kernels where the pattern
allows (a ReLU before the next layer's Q is absorbed), so a W8A8 graph runs int8 on
CPUs with integer dot-product instructions; ``hardware.measure_onnx`` measures whether
that is faster than fp32 on this machine.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from metacompress._version import __version__
from metacompress.compressors.io import write_bytes_atomic
from metacompress.compressors.metrics import logits
from metacompress.compressors.onnx_portable import PortableOps
from metacompress.compressors.recovery import accuracy
from metacompress.errors import MetacompressError, RunExists, UnsupportedLayer

DEFAULT_OPSET = 17  # per-channel DequantizeLinear needs 13; 17 has LayerNormalization
CONTAINER = "int8 weights (symmetric, zero point 0, per output channel), uint8 activations (per tensor)"


class WeightQDQ(nn.Module):
    """Parametrization that traces to QuantizeLinear/DequantizeLinear on a weight (int8, axis 0)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", torch.zeros(scale.shape, dtype=torch.int32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # the weight is already on its lattice (|code| <= 2^(b-1) - 1), so the int8 range is a container
        return torch.fake_quantize_per_channel_affine(weight, self.scale, self.zero_point, 0, -128, 127)


class ActivationQDQ(nn.Module):
    """Replaces an ``ActivationQuantizer``: a clip to the b-bit lattice, then a uint8 QDQ pair."""

    def __init__(self, bits: int, scale: float, zero_point: int) -> None:
        super().__init__()
        self.bits, self.scale, self.zero_point = bits, scale, zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = torch.tensor(self.scale), torch.tensor(self.zero_point, dtype=torch.int32)
        if self.bits < 8:
            # Min/Max, not Clip: onnxruntime drops a Clip in front of a QuantizeLinear as if it were a ReLU
            low, high = torch.tensor(-self.zero_point * self.scale), torch.tensor((2**self.bits - 1 - self.zero_point) * self.scale)
            x = torch.minimum(torch.maximum(x, low), high)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


class HeadTableLookup(nn.Module):
    """An embedding table tied to an LM head, looked up in the head's dequantized codes.

    The table shares the head's weight, which export quantized per vocabulary row; traced as it
    is, the table would read the float tensor and the graph would carry the table twice (fp32
    and int8 codes). Here it reads ``head.weight``, whose ``WeightQDQ`` traces to one
    DequantizeLinear of the codes, then a Gather.
    """

    def __init__(self, table: nn.Embedding, head: nn.Linear) -> None:
        super().__init__()
        self.padding_idx = table.padding_idx
        object.__setattr__(self, "head", head)  # not a submodule: the head stays where it is in the tree

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.head.weight, self.padding_idx)


def _read_head_codes(model: nn.Module, w_bits: dict[str, int]) -> None:
    """Point every plain embedding table that shares a quantized Linear's weight at that Linear's codes (before QDQ)."""
    heads = {id(model.get_submodule(name).weight): model.get_submodule(name) for name in w_bits
             if type(model.get_submodule(name)) is nn.Linear}
    for name, module in list(model.named_modules()):
        if type(module) is nn.Embedding and id(module.weight) in heads and module.max_norm is None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, HeadTableLookup(module, heads[id(module.weight)]))


def _qdq_module(compressed: nn.Module) -> tuple[nn.Module, dict[str, int], dict[str, int]]:
    """A copy of ``compressed`` whose fake quantizers trace to ONNX QDQ ops; its bits per layer."""
    w_bits: dict[str, int] | None = getattr(compressed, "metacompress_weight_bits", None)
    if w_bits is None:
        raise MetacompressError("this model was not made by metacompress.export (or load_compressed); export it first")
    model = copy.deepcopy(compressed).eval()
    _read_head_codes(model, w_bits)
    a_bits = {}
    for name in w_bits:
        layer = model.get_submodule(name)
        quantizer = getattr(layer, "input_quantizer", None)  # None: an embedding table, whose input is token ids
        if quantizer is not None:
            a_bits[name] = int(quantizer.bits)
            layer.input_quantizer = ActivationQDQ(a_bits[name], float(quantizer.scale), int(quantizer.zero_point))
        parametrize.register_parametrization(layer, "weight", WeightQDQ(layer.weight_scale))
    return model, dict(w_bits), a_bits


def trace_to_onnx(model: nn.Module, example_input: torch.Tensor, opset: int = DEFAULT_OPSET,
                  dynamic_dims: tuple[int, ...] = ()) -> onnx.ModelProto:
    """``model`` as ONNX through the TorchScript exporter (exact op mapping, no onnxscript), the batch and
    ``dynamic_dims`` of the input dynamic, the ops it or onnxruntime refuse computed from ones they take
    (``onnx_portable``).

    Raises:
        Whatever the exporter raises for an op it cannot express (``to_onnx`` names the layer).
    """
    buffer, chatter = io.BytesIO(), io.StringIO()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention / nn.TransformerEncoderLayer's fused inference kernel has no ONNX
    # mapping; their standard path (linear, softmax, matmul) exports and computes the same values
    torch.backends.mha.set_fastpath_enabled(False)
    # The exporter appends every defaulted parameter of forward() to the traced inputs, so an int
    # default used in the computation (transformers' causal LMs: logits_to_keep=0) became a graph
    # input onnxruntime then demands. For the call, forward is seen as forward(x).
    own_forward = model.__dict__.get("forward")
    bound = model.forward
    model.forward = lambda x: bound(x)
    try:
        with warnings.catch_warnings(), torch.no_grad(), PortableOps(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings, its IR dumps
            torch.onnx.export(model, (example_input,), buffer, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch", **{d: f"input_dim{d}" for d in dynamic_dims}}, "logits": {0: "batch"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if own_forward is None:
            del model.forward
        else:
            model.forward = own_forward
    return onnx.load_from_string(buffer.getvalue())


def _culprit(model: nn.Module, example_input: torch.Tensor, opset: int, reason: str) -> tuple[str, str]:
    """The first leaf module (in execution order) that fails alone for ``reason``: (name, type).

    The same reason only: a leaf reading another module's weight (``HeadTableLookup``) cannot
    be traced alone at all, and must not be blamed for what the model's own code does.
    """
    inputs: dict[str, torch.Tensor] = {}
    leaves = {name: m for name, m in model.named_modules() if not list(m.children())}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            inputs.setdefault(name, args[0] if args else None)
        return hook

    handles = [m.register_forward_pre_hook(record(name)) for name, m in leaves.items()]
    with torch.no_grad():
        model(example_input)
    for handle in handles:
        handle.remove()
    for name, x in inputs.items():
        if isinstance(x, torch.Tensor):
            try:
                trace_to_onnx(leaves[name], x, opset)
            except Exception as exc:  # noqa: BLE001 (any exporter failure for the reason marks the culprit)
                if _first_line(exc) == reason:
                    return name, type(leaves[name]).__name__
    return "", type(model).__name__


def _values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every constant in the graph (initializers and Constant nodes), by output name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # in topological order, so an Identity's input is already known
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _per_channel(values: np.ndarray, rank: int) -> np.ndarray:
    return values.reshape((-1,) + (1,) * (rank - 1))


WEIGHT_SOURCE = ".parametrizations.weight.original"  # how a WeightQDQ-parametrized weight is named in the traced graph


def fold_weight_quantizers(graph: onnx.GraphProto) -> None:
    """``QuantizeLinear(float weight)`` -> an int8 initializer (the codes), named ``<layer>.weight_codes``.

    Only a layer's weight is folded: a layer whose input is a constant (Swin-V2's position-bias
    MLP reads a coordinate table buffer) keeps its activation's Q/DQ pair, asymmetric as calibrated.
    """
    values = _values(graph)
    weights = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in values and n.input[0].endswith(WEIGHT_SOURCE)]
    for node in weights:
        weight, scale, zero = (values[i] for i in node.input)
        codes = np.clip(np.rint(weight / _per_channel(scale, weight.ndim)), -128, 127).astype(np.int8)
        name = node.input[0].replace(WEIGHT_SOURCE, ".weight_codes")
        graph.initializer.append(numpy_helper.from_array(codes, name))
        for consumer in graph.node:
            consumer.input[:] = [name if i == node.output[0] else i for i in consumer.input]
        graph.node.remove(node)


def _fold_batchnorms(graph: onnx.GraphProto) -> None:
    """Fold ``DQ(int8 codes) -> Conv -> BatchNormalization`` into the conv's scales and bias (exact)."""
    values = _values(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    inits = {init.name: init for init in graph.initializer}
    for bn in [n for n in graph.node if n.op_type == "BatchNormalization"]:
        conv = producer.get(bn.input[0])
        dq = producer.get(conv.input[1]) if conv is not None and conv.op_type == "Conv" else None
        if dq is None or dq.op_type != "DequantizeLinear" or consumers[bn.input[0]] != 1 or dq.input[0] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (values[i].astype(np.float64) for i in bn.input[1:])
        factor = gamma / np.sqrt(var + eps)
        codes, scale = values[dq.input[0]], values[dq.input[1]].astype(np.float64)
        bias = values[conv.input[2]].astype(np.float64) if len(conv.input) > 2 else np.zeros_like(mean)
        sign = np.where(factor < 0, -1, 1).astype(np.int8)
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(codes * _per_channel(sign, codes.ndim), dq.input[0]))
        scale_name, bias_name = f"{dq.input[0]}.scale", f"{dq.input[0]}.folded_bias"
        graph.initializer.append(numpy_helper.from_array((scale * np.abs(factor)).astype(np.float32), scale_name))
        graph.initializer.append(numpy_helper.from_array(((bias - mean) * factor + beta).astype(np.float32), bias_name))
        dq.input[1] = scale_name
        conv.input[:] = [conv.input[0], conv.input[1], bias_name]
        conv.output[0] = bn.output[0]
        graph.node.remove(bn)


def _drop_unused(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def to_onnx(compressed: nn.Module, example_input: torch.Tensor, opset: int = DEFAULT_OPSET,
            dynamic_dims: Sequence[int] = ()) -> onnx.ModelProto:
    """The QDQ ONNX graph of an exported model (see the module docstring for its layout).

    Args:
        compressed: a module from ``export`` or ``load_compressed``.
        example_input: a batch it accepts (the batch dimension is dynamic in the graph).
        opset: ONNX opset, 13 or newer (per-channel DequantizeLinear).
        dynamic_dims: other dimensions of the input left free in the graph (1 for a sequence's
            length in ``(N, T)`` token ids or ``(N, T, C)`` features, 2 and 3 for an image's
            height and width); each is checked by running the graph with that dimension doubled
            against the PyTorch model, since forward code can fix a size in the trace.

    Raises:
        UnsupportedLayer: if a layer has no ONNX equivalent (the message names it), or the
            graph does not compute the model at a size a dynamic dimension allows.
        MetacompressError: if ``compressed`` was not made by ``export``, or a dynamic
            dimension is not one of the input's (or is the batch, always dynamic).
    """
    if opset < 13:
        raise MetacompressError(f"opset {opset} is too old: per-channel DequantizeLinear needs opset 13 or newer; use --opset 17")
    dynamic_dims = tuple(sorted(set(dynamic_dims)))
    wrong = [d for d in dynamic_dims if not 1 <= d < example_input.dim()]
    if wrong:
        raise MetacompressError(f"dynamic dims {wrong} are not dimensions 1 to {example_input.dim() - 1} of the input "
                                f"(shape {tuple(example_input.shape)}; dimension 0, the batch, is always dynamic); "
                                f"pass --dynamic-dims among {list(range(1, example_input.dim()))}")
    model, w_bits, a_bits = _qdq_module(compressed)
    try:
        proto = trace_to_onnx(model, example_input, opset, dynamic_dims)
    except Exception as exc:  # noqa: BLE001 (the exporter raises many types; all mean "cannot express")
        reason = _first_line(exc)
        name, kind = _culprit(model, example_input, opset, reason)
        where = f"layer {name!r} ({kind})" if name else f"the forward code of {kind} (outside any submodule)"
        raise UnsupportedLayer(f"{where} cannot be expressed in ONNX opset {opset}: {reason}. Replace it with standard "
                               "torch layers/ops (or a newer --opset) and compress again") from exc
    graph = proto.graph
    fold_weight_quantizers(graph)
    _fold_batchnorms(graph)
    _drop_unused(graph)
    plan = getattr(compressed, "metacompress_plan", None)
    metadata = {"metacompress.version": __version__, "metacompress.container": CONTAINER,
                "metacompress.weight_bits": json.dumps(w_bits), "metacompress.activation_bits": json.dumps(a_bits),
                "metacompress.plan": json.dumps(plan.to_dict()) if plan is not None else ""}
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    proto.producer_name, proto.producer_version = "metacompress", __version__
    onnx.checker.check_model(proto)
    sess = _check_runs(proto, example_input)
    for dim in dynamic_dims:
        _check_dynamic(sess, model, example_input, dim)
    return proto


def _check_dynamic(sess, model: nn.Module, example_input: torch.Tensor, dim: int) -> None:
    """The graph computes what ``model`` computes on the example doubled along ``dim`` (repeated: valid data).

    Why: forward code that reads a size into a Python number (``int(x.shape[1])``, a position
    table sliced to the traced length) fixes it in the trace, and the graph then fails, or
    silently computes something else, at any other size.

    Raises:
        MetacompressError: if ``model`` itself refuses the doubled input (the dimension is not free).
        UnsupportedLayer: if the graph fails there or its output differs from ``model``'s.
    """
    traced = example_input.shape[dim]
    stretched = torch.cat([example_input, example_input], dim=dim)
    try:
        with torch.no_grad():
            expected = logits(model(stretched))
    except Exception as exc:  # noqa: BLE001 (any failure: the model does not take that size)
        raise MetacompressError(f"dynamic dim {dim}: the model itself refuses an input with it doubled ({traced} -> "
                                f"{2 * traced}): {_first_line(exc)}; leave that dimension fixed") from exc
    fixed = (f"dynamic dim {dim}: the graph traced at size {traced} does not compute the model at size {2 * traced}; "
             "the forward code fixes that size in the trace (a size read into a Python number); leave the dimension "
             "fixed, or make that code size-independent and compress again")
    try:
        got = onnx_logits(sess, stretched)
    except Exception as exc:  # noqa: BLE001 (onnxruntime's own error types)
        raise UnsupportedLayer(f"{fixed} (onnxruntime: {_first_line(exc)})") from exc
    # a tolerance for 4-bit-and-below codes that round the other way at a tie; a fixed size errs by far more
    tolerance = 0.05 * float(expected.abs().max()) + 1e-4
    if got.shape != expected.shape:
        raise UnsupportedLayer(f"{fixed} (shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)})")
    difference = float((got - expected).abs().max())
    if difference > tolerance:
        raise UnsupportedLayer(f"{fixed} (max difference {difference:.3g}, PyTorch {tuple(expected.shape)})")


def _check_runs(proto: onnx.ModelProto, example_input: torch.Tensor):
    """onnxruntime loads ``proto`` and runs it at the traced batch size and at one more.

    Why: the exporter accepts graphs onnxruntime then refuses (a shape its kernels do not
    support), and forward code that reads ``x.shape[0]`` into Python numbers fixes the batch
    size in the trace (a Split of exactly that many rows); either way the file would fail at
    deployment, so it is refused here, before anything is written.

    Returns:
        The onnxruntime session (graph as written).

    Raises:
        UnsupportedLayer: naming onnxruntime's complaint (its node) and the batch size.
    """
    traced = len(example_input)
    other = torch.cat([example_input, example_input[:1]])
    unsupported = ("the model's forward code uses an op or shape onnxruntime does not run; replace it with standard "
                   "torch layers/ops and compress again")
    batch_fixed = ("the forward code fixes the batch size in the trace (a size computed from x.shape[0] as a Python "
                   "number); make that code batch-independent and compress again")
    try:
        sess = session(proto.SerializeToString(), optimize=False)
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own Fail/InvalidGraph types)
        raise UnsupportedLayer(f"onnxruntime cannot load the exported graph: {_first_line(exc)}; {unsupported}") from exc
    for batch in (example_input, other):
        try:
            rows = len(onnx_logits(sess, batch))
        except Exception as exc:  # noqa: BLE001
            advice = unsupported if len(batch) == traced else f"it runs at the traced batch size {traced} only, so {batch_fixed}"
            raise UnsupportedLayer(f"onnxruntime cannot run the exported graph at batch size {len(batch)}: "
                                   f"{_first_line(exc)}; {advice}") from exc
        if rows != len(batch):
            raise UnsupportedLayer(f"the exported graph returns {rows} rows for a batch of {len(batch)}: {batch_fixed}")
    return sess


def _first_line(exc: Exception) -> str:
    """An exception's first non-empty line (onnxruntime's messages run on with internals), and the op
    the TorchScript exporter was translating if it says (its own bugs name nothing else: MobileViTV2's
    ``col2im`` at opset 18 fails with "'NoneType' object is not subscriptable")."""
    text = str(exc).strip()
    first = text.splitlines()[0].rstrip(". ") if text else type(exc).__name__
    translating = re.search(r"Occurred when translating (\w+)", text)
    return f"{first} (while translating {translating.group(1)})" if translating and translating.group(1) not in first else first


def export_onnx(compressed: nn.Module, path: str | Path, example_input: torch.Tensor, opset: int = DEFAULT_OPSET,
                overwrite: bool = False, dynamic_dims: Sequence[int] = ()) -> Path:
    """Write ``to_onnx(compressed)`` to ``path`` atomically (temp file, then rename).

    Raises:
        RunExists: if ``path`` exists and ``overwrite`` is False (checked before exporting).
        UnsupportedLayer: see ``to_onnx``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunExists(f"{path} already exists; choose another --out or pass --overwrite to replace it")
    write_bytes_atomic(path, to_onnx(compressed, example_input, opset, dynamic_dims).SerializeToString())
    return path


def layer_bits(path_or_proto: str | Path | onnx.ModelProto) -> tuple[dict[str, int], dict[str, int]]:
    """The (weight bits, activation bits) per layer that an exported ONNX model records."""
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    meta = {p.key: p.value for p in proto.metadata_props}
    if "metacompress.weight_bits" not in meta:
        raise MetacompressError("this ONNX model was not written by metacompress (no metacompress.weight_bits metadata)")
    return json.loads(meta["metacompress.weight_bits"]), json.loads(meta["metacompress.activation_bits"])


def session(model: str | Path | bytes, threads: int | None = 1, optimize: bool = True):
    """An onnxruntime CPU session, by default with every graph optimisation (QDQ fusion included).

    Args:
        model: an ONNX file or its bytes.
        threads: intra-op threads (None: onnxruntime's default, all cores).
        optimize: False runs the graph as written (no integer-kernel fusion), which is
            how the tests check the graph itself against the PyTorch model.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_logits(sess, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Run ``sess`` on ``x`` in batches; the logits as a torch tensor."""
    name = sess.get_inputs()[0].name
    dtype = np.float32 if x.is_floating_point() else np.int64  # token ids stay integers, as traced
    parts = [sess.run(None, {name: x[i : i + batch_size].numpy().astype(dtype)})[0] for i in range(0, len(x), batch_size)]
    return torch.from_numpy(np.concatenate(parts))


def onnx_accuracy(sess, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of an onnxruntime session on (x, y)."""
    return float((onnx_logits(sess, x).argmax(dim=-1) == y).float().mean()) if len(x) else 0.0


def onnx_agreement(compressed: nn.Module, path: str | Path, x: torch.Tensor, y: torch.Tensor, threads: int | None = 1) -> dict:
    """Test-split accuracy of the PyTorch (fake-quant) model and of its ONNX file in onnxruntime.

    Returns:
        ``{"torch_accuracy", "onnx_accuracy", "difference_points"}`` (difference in
        percentage points, onnx minus torch).
    """
    with torch.no_grad():
        torch_acc = accuracy(compressed, x, y)
    onnx_acc = onnx_accuracy(session(path, threads), x, y)
    return {"torch_accuracy": torch_acc, "onnx_accuracy": onnx_acc, "difference_points": 100 * (onnx_acc - torch_acc)}

"""Export mode: a physically pruned, quantized model the user can deploy, save and reload.

Channels are removed for real with Torch-Pruning (a smaller dense model that runs
faster), weights are quantized per output channel and activation quantizers are
calibrated by the same code search mode runs, so for one plan both modes compute the
same outputs. Saved models need no pickled code: tensors go to safetensors (weights as
int8 codes plus fp32 scales), structure and plan to JSON.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from metacompress._version import __version__
from metacompress.compressors import layer_norm
from metacompress.compressors.attention import HEAD_ATTRIBUTES
from metacompress.compressors.graph import ModelGraph, build_graph
from metacompress.compressors.masking import layer_bits, quantize_weights
from metacompress.compressors.plan import Plan
from metacompress.compressors.quant import attach_activation_quantizers, weight_codes
from metacompress.compressors.metrics import Distillation
from metacompress.compressors.recovery import calibrate, distill
from metacompress.compressors.weight_reads import installed
from metacompress.compressors.surgery import needs_plain_copy, plain_copy, prune_units
from metacompress.errors import CorruptFile, InvalidCalibration, MetacompressError, PlanMismatch

EXPORT_FORMAT = 1
SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features", "num_channels", "num_groups",
               "normalized_shape", *HEAD_ATTRIBUTES)


def export(
    model: nn.Module,
    plan: Plan,
    example_input: torch.Tensor,
    calibration,
    graph: ModelGraph | None = None,
) -> nn.Module:
    """Build the compressed model for ``plan``: pruned for real, quantized, calibrated.

    Args:
        model: the original model (not modified).
        plan: a plan made for this model.
        example_input: a batch the model accepts (used to trace the dependency graph).
        calibration: input batches for BatchNorm and activation-range calibration: one tensor
            batch, a list of batches or a DataLoader.
        graph: the model's analysis, if already built (saves a re-analysis).

    Returns:
        A new module: smaller dense layers with fake-quantized weights and an
        ``input_quantizer`` on every quantized layer. ``save_compressed`` stores it.

    Raises:
        PlanMismatch: if the plan was made for another model.
        InvalidCalibration: if ``calibration`` is not a tensor batch, a list of batches or a
            DataLoader, or holds batches of another shape.
    """
    calibration = calibration_batches(calibration, tuple(example_input.shape[1:]))
    graph = graph or build_graph(model, example_input)
    spec = graph.spec
    plan.check_model(spec)
    compressed = plain_copy(model, spec.routes, spec.folds).eval()
    removals = [
        (unit_graph, unit_graph.removed_channels(unit, decision.kept_channels))
        for unit, unit_graph, decision in zip(spec.units, graph.units, plan.decisions)
    ]
    prune_units(compressed, example_input, removals)
    layer_norm.as_plain(compressed)
    w_bits, a_bits = layer_bits(spec, plan)
    quantize_weights(compressed, w_bits, keep_scales=True)
    quantizers = attach_activation_quantizers(compressed, [layer.name for layer in spec.computing_layers])
    calibrate(compressed, quantizers, a_bits, calibration)
    compressed.metacompress_plan = plan
    compressed.metacompress_weight_bits = w_bits
    return compressed


def calibration_batches(calibration, sample_shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The calibration batches as a list, checked before any work.

    Accepted: one tensor batch (N, *sample_shape), a list or tuple of such batches, or a
    ``torch.utils.data.DataLoader`` (each batch a tensor, or an (inputs, targets) pair whose
    inputs are used). One tensor is one batch, never iterated: iterating it would yield single
    samples without their batch dimension.

    Raises:
        InvalidCalibration: anything else, or a batch that is not a tensor of (N, *sample_shape).
    """
    from torch.utils.data import DataLoader

    expected = "(N, " + ", ".join(map(str, sample_shape)) + ")"
    if isinstance(calibration, torch.Tensor):
        batches = [calibration]
    elif isinstance(calibration, DataLoader):
        batches = [b[0] if isinstance(b, (tuple, list)) else b for b in calibration]
    elif isinstance(calibration, (list, tuple)):
        batches = list(calibration)
    else:
        raise InvalidCalibration(
            f"calibration is a {type(calibration).__name__}; pass one tensor batch of shape {expected}, "
            "a list of such batches, or a torch.utils.data.DataLoader"
        )
    bad = [
        f"batch {i}: {tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}"
        for i, b in enumerate(batches)
        if not isinstance(b, torch.Tensor) or tuple(b.shape[1:]) != sample_shape or not len(b)
    ]
    if bad or not batches:
        raise InvalidCalibration(
            f"calibration batches must be non-empty tensors of shape {expected} like the example input; got "
            + ("; ".join(bad[:3]) if bad else "no batch")
            + ". Pass e.g. x[:256] or list(x.split(128))"
        )
    return batches


def recover(
    compressed: nn.Module,
    teacher: nn.Module,
    inputs: torch.Tensor,
    steps: int,
    calibration: Sequence[torch.Tensor],
    seed: int = 0,
    lr: float = 1e-3,
    loss: Distillation = "logits",
) -> nn.Module:
    """Final recovery of an exported model: KD fine-tune, re-quantize, recalibrate (in place).

    Args:
        compressed: a module returned by ``export``.
        teacher: the original model.
        inputs: train-split inputs for distillation (never search or test).
        steps: optimizer steps (0 returns the model unchanged).
        calibration: the calibration batches used at export.
        loss: the distillation loss: the model's output kind or a callable (see ``distill``).
    """
    if steps <= 0:
        return compressed
    w_bits: dict[str, int] = compressed.metacompress_weight_bits
    quantizers = {name: compressed.get_submodule(name).input_quantizer for name in _reads_activations(compressed, w_bits)}
    a_bits = {name: int(q.bits) for name, q in quantizers.items()}
    distill(compressed, teacher, inputs, w_bits, steps, lr=lr, seed=seed, loss=loss)
    quantize_weights(compressed, w_bits, keep_scales=True)
    calibrate(compressed, quantizers, a_bits, list(calibration))
    return compressed


def _reads_activations(model: nn.Module, layer_names) -> list[str]:
    """The layers whose input is quantized: all but lookup tables (``OutputMajorEmbedding`` reads token ids)."""
    return [name for name in layer_names if not getattr(model.get_submodule(name), "lookup", False)]


def save_compressed(model: nn.Module, path: str | Path, builder: dict | None = None, overwrite: bool = False) -> Path:
    """Write an exported model to the folder ``path`` (atomically): safetensors + JSON.

    Quantized weights are stored as int8 codes next to their fp32 ``weight_scale``;
    ``codes * weight_scale`` rebuilds them bit-exactly.

    Args:
        model: a module returned by ``export``.
        path: destination folder (created; never half-written).
        builder: how to rebuild the unpruned architecture, e.g. ``{"zoo": "resnet-w16-d2-mnist"}``,
            recorded for ``load_compressed`` callers.
        overwrite: replace an existing saved model (never a folder that is not one).
    """
    from metacompress.compressors.runs import RunFolder

    plan: Plan | None = getattr(model, "metacompress_plan", None)
    w_bits: dict[str, int] | None = getattr(model, "metacompress_weight_bits", None)
    if plan is None or w_bits is None:
        raise MetacompressError("this model was not made by metacompress.export; export it first")
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}  # a tensor under two keys (a tied LM head, a layer under two paths) is stored once
    state = model.state_dict()
    first_key: dict[tuple, str] = {}
    # a quantized layer's key first: a tied table is stored as its head's codes
    for key in sorted(state, key=lambda k: not (k.endswith(".weight") and k.rsplit(".", 1)[0] in w_bits)):
        value = state[key]
        if value.numel():
            first_key.setdefault((value.data_ptr(), tuple(value.shape), value.dtype), key)
    for key, value in state.items():
        shared = first_key[(value.data_ptr(), tuple(value.shape), value.dtype)] if value.numel() else key
        if shared != key:
            tied[key] = shared
            continue
        owner = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and owner in w_bits:
            layer = model.get_submodule(owner)
            key, value = f"{owner}.weight_codes", weight_codes(value, layer.weight_scale, w_bits[owner])
        tensors[key] = value.detach().contiguous()
    routes, folds = installed(model)
    structure = {
        "format": EXPORT_FORMAT,
        "metacompress_version": __version__,
        "builder": builder or {},
        "plan": plan.to_dict(),
        "weight_bits": w_bits,
        "shapes": _shape_attrs(model),
        "tied": tied,
        "routes": [[reader, list(layers)] for reader, layers in routes],
        "folds": [[layer, list(shape)] for layer, shape in folds],
    }
    with RunFolder(path, "model", overwrite).write() as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
        (tmp / "model.json").write_text(json.dumps(structure, indent=2))
    return Path(path)


def read_structure(path: str | Path) -> dict:
    """The JSON half of a saved compressed model (builder, plan, shapes)."""
    file = Path(path) / "model.json"
    try:
        structure = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MetacompressError(f"{file} is missing or corrupt ({exc}); re-run export") from exc
    if structure.get("format") != EXPORT_FORMAT:
        raise MetacompressError(f"{file} has export format {structure.get('format')}, this version reads {EXPORT_FORMAT}")
    return structure


def load_compressed(path: str | Path, base_model: nn.Module) -> nn.Module:
    """Rebuild a saved compressed model on a fresh, unpruned instance of its architecture.

    Args:
        path: folder written by ``save_compressed``.
        base_model: a new instance of the original architecture (its weights are replaced;
            it is modified and returned; one ``plain_copy`` would change, e.g. with weight
            norm or an LSTM, is converted in a copy instead, as compression saw it).

    Raises:
        PlanMismatch: if ``base_model`` is not the architecture the model was saved from.
        CorruptFile: if ``model.json`` sets anything but a shape attribute to integers, or
            the weights file is truncated or corrupt.
    """
    structure = read_structure(path)
    weights = Path(path) / "weights.safetensors"
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptFile(f"{weights} is missing or corrupt ({exc}); re-save the model with save_compressed") from exc
    # saved as export wrote it, from a plain_copy: a base that copy would change is converted the same way
    routes = tuple((reader, tuple(layers)) for reader, layers in structure.get("routes", []))
    folds = tuple((layer, tuple(shape)) for layer, shape in structure.get("folds", []))
    model = (plain_copy(base_model, routes, folds) if needs_plain_copy(base_model) or routes or folds else base_model).eval()
    layer_norm.as_plain(model)
    _check_shapes(structure.get("shapes"), Path(path) / "model.json")
    modules = dict(model.named_modules())
    missing = [name for name in structure["shapes"] if name not in modules]
    if missing:
        raise PlanMismatch(f"base model lacks modules {missing[:5]} of the saved model; pass the architecture it was exported from")
    for name, attrs in structure["shapes"].items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    w_bits = {name: int(bits) for name, bits in structure["weight_bits"].items()}
    state = dict(tensors)
    for name in w_bits:
        codes, scale = state.pop(f"{name}.weight_codes"), state[f"{name}.weight_scale"]
        state[f"{name}.weight"] = codes.float() * scale.reshape((-1,) + (1,) * (codes.dim() - 1))
        model.get_submodule(name).register_buffer("weight_scale", torch.empty_like(scale))
    for key, shared in structure.get("tied", {}).items():  # after decoding: a layer under two paths shares its codes
        if shared not in state:
            raise CorruptFile(f"{Path(path) / 'model.json'} ties {key} to {shared}, which the weights file lacks; re-save the model")
        state[key] = state[shared]
    attach_activation_quantizers(model, _reads_activations(model, w_bits))
    _resize_to(model, state)
    load_tensors(model, state)
    model.metacompress_plan = Plan.from_dict(structure["plan"])
    model.metacompress_weight_bits = w_bits
    return model


def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(tensors, strict=True)`` with the model's own module versions attached.

    Why: a tensors-only file (safetensors) drops ``state_dict()._metadata``, and a module whose
    ``_load_from_state_dict`` reads its version fails without it (torchvision's MNASNet raises
    "version should be set to 1 or 2"); the model loaded into has the file's classes, so its
    versions are the file's.
    """
    state = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=True)


def _check_shapes(shapes: dict, where: Path) -> None:
    """Refuse ``shapes`` entries that would set anything but a shape attribute, or to non-integers.

    ``load_compressed`` sets these attributes on the user's modules, so an edited or hostile
    ``model.json`` could otherwise overwrite ``forward`` or any other attribute.
    """
    def is_shape(value) -> bool:
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
        return is_int(value) or (isinstance(value, list) and all(is_int(v) for v in value))

    if not isinstance(shapes, dict) or not all(isinstance(attrs, dict) for attrs in shapes.values()):
        raise CorruptFile(f"{where} has no shapes table (module -> attributes); re-save the model with save_compressed")
    bad = [f"{name}.{attr}={value!r}" for name, attrs in shapes.items() for attr, value in attrs.items()
           if attr not in SHAPE_ATTRS or not is_shape(value)]
    if bad:
        raise CorruptFile(f"{where} sets {', '.join(bad[:3])}: only {', '.join(SHAPE_ATTRS)} may be set, to integers; "
                          "re-save the model with save_compressed")


def _shape_attrs(model: nn.Module) -> dict[str, dict]:
    shapes = {}
    for name, module in model.named_modules():
        own = vars(module)  # instance attributes, not properties: those cannot be set on reload
        attrs = {a: own[a] for a in SHAPE_ATTRS if a in own}
        attrs = {a: list(v) if isinstance(v, tuple) else v for a, v in attrs.items() if isinstance(v, (int, tuple))}
        if attrs:
            shapes[name] = attrs
    return shapes


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter/buffer of ``model`` the shape stored in ``state``."""
    for key, value in state.items():
        owner_name, attr = key.rsplit(".", 1) if "." in key else ("", key)
        owner = model.get_submodule(owner_name)
        if attr in owner._parameters and owner._parameters[attr] is not None:
            if owner._parameters[attr].shape != value.shape:
                owner._parameters[attr] = nn.Parameter(torch.empty_like(value, dtype=owner._parameters[attr].dtype))
        elif attr in owner._buffers and owner._buffers[attr] is not None:
            if owner._buffers[attr].shape != value.shape:
                owner._buffers[attr] = torch.empty_like(value, dtype=owner._buffers[attr].dtype)

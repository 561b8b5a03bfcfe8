"""``metacompress bench deploy``: what compression buys when the model really runs in onnxruntime.

For each zoo model (``run_deploy_model``), four ONNX files are built and run on this CPU at batch 1:

==============  ===========================================================================
variant         what it is
==============  ===========================================================================
fp32            the original model, plain fp32 graph
int8            the original model at W8A8 (int8 QDQ, post-training calibration, no fine-tune)
pruned-fp32     the compressed model's channels and recovered weights, run in fp32
                (activations unquantized): the effect of pruning alone
pruned-mixed    the compressed model as ``export_onnx`` writes it: pruned and at the plan's bits
==============  ===========================================================================

The compressed model is what ``compress`` returns for ``hardware`` under ``budget`` with
the shipped policy and ``finetune_steps`` of KD recovery; the default target has 2-8-bit
kernels so that the plan mixes bits, and ``cpu_preset`` (a roofline CPU, 8-bit only)
says what that plan should cost on a CPU. Latency is the
median of ``repeats`` onnxruntime runs, with one intra-op thread and with all cores.
Accuracy is top-1 on the test split, in onnxruntime and in PyTorch (fake quantization),
so the two can be compared. The preset's prediction is shown next to the measurement
as a ratio to the unpruned W8A8 model (the preset has no fp32 price), because an
A76's milliseconds and this CPU's are not comparable but their ratios are.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from metacompress.compressors.cost import total_cost
from metacompress.compressors.export import export
from metacompress.compressors.graph import build_graph
from metacompress.compressors.hardware.measure_onnx import time_onnx_ms
from metacompress.compressors.hardware.presets import get_hardware
from metacompress.compressors.onnx_export import onnx_accuracy, session, to_onnx, trace_to_onnx
from metacompress.compressors.plan import Plan
from metacompress.compressors.recovery import accuracy
from metacompress.api import compress
from metacompress.sources import load_model_source

DEPLOY_MODELS = ("vgg-w16-d2-mnist", "mlp-w256-d2-mnist", "mobilenetv2-w8-d1-digits")
VARIANTS = ("fp32", "int8", "pruned-fp32", "pruned-mixed")


@dataclass(frozen=True)
class DeployBenchConfig:
    """Knobs of the deploy benchmark (defaults are what the README quotes)."""

    models: tuple[str, ...] = DEPLOY_MODELS
    hardware: str = "bismo-edge"  # plans for a target with 2-8-bit kernels, so the plan mixes bits
    budget: str = "bitops=0.25"
    cpu_preset: str = "cortex-a76-int8"  # the roofline CPU preset whose prediction is shown
    finetune_steps: int = 200
    batch: int = 1
    repeats: int = 21
    min_repeat_ms: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class DeployRow:
    """One (model, variant): measured latency, accuracy, and the preset's predicted ratio."""

    model: str
    variant: str
    bits: str  # e.g. "fp32", "W8A8", "W2-8 A4-8"
    params: int
    onnx_kib: float
    ms_one_thread: float
    ms_all_threads: float
    measured_ratio: float  # ms_one_thread / the int8 variant's ms_one_thread
    predicted_ratio: float | None  # the preset's latency over its unpruned W8A8 latency (None: fp32)
    onnx_accuracy: float
    torch_accuracy: float

    def as_dict(self) -> dict:
        return asdict(self)


def _without_quantizers(compressed: nn.Module) -> nn.Module:
    """The compressed model with activation quantization off: its weights, in fp32 kernels."""
    plain = copy.deepcopy(compressed)
    for module in plain.modules():
        if hasattr(module, "input_quantizer"):
            module.input_quantizer.bits.fill_(0)
    return plain


def _span(bits: tuple[int, ...]) -> str:
    low, high = min(bits), max(bits)
    return str(low) if low == high else f"{low}-{high}"


def _bits_label(plan: Plan) -> str:
    return f"W{_span(plan.w_bits)}A{_span(plan.a_bits)}"


def run_deploy_model(model_id: str, config: DeployBenchConfig) -> list[DeployRow]:
    """The four variants of one zoo model, measured (see the module docstring)."""
    model, data, _ = load_model_source(model_id)
    x, y = data.test.x, data.test.y
    example = data.train.x[: config.batch]
    result = compress(model, data.train.x[:8], data, hardware=config.hardware, budget=config.budget,
                      finetune_steps=config.finetune_steps, seed=config.seed, name=model_id)
    graph = build_graph(model, data.train.x[:8])
    spec, hw = graph.spec, get_hardware(config.cpu_preset)
    int8_model = export(model, Plan.uniform(spec), data.train.x[:8], [data.train.x[:256]], graph=graph)
    plan = result.plan
    reference = total_cost(spec, "latency", spec.full_kept, [8] * len(spec.units), [8] * len(spec.units), hw)
    predicted = {"int8": 1.0, "pruned-mixed": total_cost(spec, "latency", plan.kept, plan.w_bits, plan.a_bits, hw) / reference}
    variants = {
        "fp32": (model.eval(), trace_to_onnx(model.eval(), example), "fp32"),
        "int8": (int8_model, to_onnx(int8_model, example), "W8A8"),
        "pruned-fp32": (_without_quantizers(result.model), trace_to_onnx(_without_quantizers(result.model), example), "fp32"),
        "pruned-mixed": (result.model, to_onnx(result.model, example), _bits_label(plan)),
    }
    measured = {}
    for name, (torch_model, proto, bits) in variants.items():
        onnx_bytes = proto.SerializeToString()
        with torch.no_grad():
            torch_acc = accuracy(torch_model, x, y)
        timing = dict(repeats=config.repeats, min_repeat_ms=config.min_repeat_ms)
        measured[name] = (bits, sum(p.numel() for p in torch_model.parameters()), len(onnx_bytes) / 1024,
                          time_onnx_ms(onnx_bytes, example, threads=1, **timing),
                          time_onnx_ms(onnx_bytes, example, threads=None, **timing),
                          onnx_accuracy(session(onnx_bytes), x, y), torch_acc)
    base_ms = measured["int8"][3]
    return [DeployRow(model_id, name, bits, params, kib, one, every, one / base_ms, predicted.get(name), onnx_acc, torch_acc)
            for name, (bits, params, kib, one, every, onnx_acc, torch_acc) in measured.items()]

"""Real architecture patterns (``catalogue.py``): analysis lists every layer, export shrinks
and agrees with search mode, and every planner returns a plan within budget."""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
from torch import nn

from metacompress import InfeasibleBudget, InvalidCalibration, Plan, export
from metacompress.agents import HawqPlanner, RandomSearchPlanner, UniformPlanner
from metacompress.agents.registry import load_planner
from metacompress.compressors import SearchModel, count_params
from metacompress.compressors.hardware import get_hardware
from metacompress.compressors.recovery import output_tensors
from metacompress.compressors.surgery import QUANTIZABLE
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.probes import compute_probes
from metacompress.compressors.budget import FEASIBILITY_TOLERANCE, Budget
from catalogue import CATALOGUE, build
from tiny_world import Data, Split

BUDGET = Budget("bitops", 0.4)
SAMPLES = 48  # per split: a tiny task, so each model's probes and planners take about a second

# (units, prunable units) per model: what analysis finds, pinned so a regression shows
EXPECTED_UNITS = {
    "mobilenetv3": (7, 6),
    "shufflenetv2": (9, 4),
    "ghostnet": (6, 3),
    "regnetx": (7, 6),
    "resnext-se": (6, 5),
    "convnext": (3, 2),  # the channels-last LayerNorm'd stream prunes with its layer scale (since v0.16)
    "mobilevit": (7, 4),
    "densenet": (5, 4),
    "conv-gru": (5, 1),  # the GRU's input and recurrent Linears are quantize-only units
    "permute-head": (3, 1),
    "mlp-mixer": (5, 2),
    "conv1d": (2, 1),
    "tabular": (3, 2),
    "tuple-output": (4, 2),
    "vit": (4, 3),  # q/k/v of the split nn.MultiheadAttention prune by heads; the stream with its LayerNorms and tables
    "unet": (5, 4),  # the ConvTranspose2d is a unit of its own
    "r2plus1d": (3, 2),
    "yolov8-cls": (11, 10),  # C2f: the chunked 1x1 conv pairs channel c of each half, with the bottleneck stream on the second
    "repvgg": (3, 2),  # each stage's three summed branches are one unit
    "pointnet": (11, 7),  # the T-Nets' last Linears (the transforms) are quantize-only
    "hrnet-fuse": (5, 4),
}
IDS = sorted(CATALOGUE)




def task_data(model: nn.Module, shape: tuple[int, ...]) -> Data:
    """Random inputs labelled by the model itself: accuracy starts at 100%."""
    x = torch.randn((3 * SAMPLES, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = output_tensors(model(x))[0].argmax(dim=-1)
    return Data(*(Split(x[i * SAMPLES : (i + 1) * SAMPLES], y[i * SAMPLES : (i + 1) * SAMPLES]) for i in range(3)))


@lru_cache(maxsize=None)
def task(model_id: str) -> TaskContext:
    """One context per model, shared by this module's tests (analysis and probes run once)."""
    model, shape = build(model_id)
    evaluator = ModelEvaluator(model, task_data(model, shape))
    return TaskContext(evaluator, compute_probes(evaluator), get_hardware("bismo-edge"), BUDGET, name=model_id)


def compressed_plan(spec) -> Plan:
    """Half the channels of every prunable unit, W4A6 elsewhere (frozen units stay W8A8)."""
    ratios = [0.5 if u.prunable else 0.0 for u in spec.units]
    w_bits = [8 if u.frozen else 4 for u in spec.units]
    a_bits = [8 if u.frozen else 6 for u in spec.units]
    return Plan.from_choices(spec, ratios, w_bits, a_bits)


@pytest.mark.parametrize("model_id", IDS)
def test_analysis_lists_every_layer_with_a_verdict(model_id):
    context = task(model_id)
    spec, model = context.spec, context.evaluator.model
    listed = {layer.name for layer in spec.layers} | {name for name, _ in spec.unsupported}
    layers = {name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    assert layers <= listed
    assert (len(spec.units), sum(u.prunable for u in spec.units)) == EXPECTED_UNITS[model_id]
    for unit in spec.units:
        assert unit.prunable != bool(unit.reason), unit
        assert unit.channels % unit.channel_step == 0


@pytest.mark.parametrize("model_id", IDS)
def test_export_is_smaller_finite_and_agrees_with_search_mode(model_id):
    context = task(model_id)
    evaluator = context.evaluator
    spec, model, x = context.spec, evaluator.model, evaluator.data.test.x
    plan = compressed_plan(spec)
    searched = output_tensors(SearchModel(model, evaluator.graph, evaluator.calibration).apply(plan)(x))
    compressed = export(model, plan, x[:8], evaluator.calibration, graph=evaluator.graph)
    with torch.no_grad():
        exported = output_tensors(compressed(x))
    assert all(torch.isfinite(t).all() for t in exported)
    assert max(float((s - e).abs().max()) for s, e in zip(searched, exported)) < 1e-4
    params = sum(p.numel() for p in compressed.parameters())
    assert params == count_params(spec, plan.kept)
    assert params < sum(p.numel() for p in model.parameters())


PLANNERS = {
    "uniform": (lambda: UniformPlanner(), 3),
    "hawq": (lambda: HawqPlanner(), 1),
    "random": (lambda: RandomSearchPlanner(), 3),
    "zero-shot": (lambda: load_planner("default", 0), 0),
    "few-shot": (lambda: load_planner("default", 6), 6),  # the default few-shot: re-solve under fitted corrections
}


@pytest.mark.parametrize("method", sorted(PLANNERS))
@pytest.mark.parametrize("model_id", IDS)
def test_every_planner_plans_within_budget(model_id, method):
    context = task(model_id)
    make, evaluations = PLANNERS[method]
    result = make().plan(context, evaluations, seed=0)
    cost = context.cost_ratio(result.plan.kept, result.plan.w_bits, result.plan.a_bits)
    assert cost <= BUDGET.fraction * (1 + FEASIBILITY_TOLERANCE)
    assert result.cost_ratio == pytest.approx(cost)


# regressions of the crashes measured in GitHub issue 14 ------------------------------------


@pytest.mark.parametrize("model_id", ["mobilenetv3", "ghostnet", "mobilevit"])
def test_hard_sigmoid_and_fused_attention_probe_by_finite_differences(model_id):
    probes = task(model_id).probes
    assert probes.hessian_estimator == "finite-difference"
    assert all(math.isfinite(u.hessian_trace) for u in probes.units)


def test_the_gru_is_quantized_per_time_step_and_its_producer_is_quantize_only():
    spec = task("conv-gru").spec
    assert not spec.unsupported
    conv, ih, hh = spec.units[:3]
    assert conv.layers == ("conv",) and not conv.prunable and not conv.frozen
    assert "Torch-Pruning cannot trace its channels (IndexError" in conv.reason
    assert (ih.layers, hh.layers) == (("gru.ih_l0",), ("gru.hh_l0",)) and "recurrent layer's gates" in hh.reason
    recurrent = next(layer for layer in spec.layers if layer.name == "gru.hh_l0")
    assert recurrent.out_positions == 16  # called once per time step: every call is priced


def test_a_chunked_conv_prunes_channel_c_of_each_half_together():
    spec = task("yolov8-cls").spec  # C2f: chunk(2) cuts equal halves, the second feeds the bottleneck's residual stream
    unit = next(u for u in spec.units if "body.1.cv1.0" in u.layers)
    assert unit.prunable and unit.layers == ("body.1.cv1.0", "body.1.m.0.cv2.0") and unit.channels == 4
    assert next(layer for layer in spec.layers if layer.name == "body.1.cv1.0").out_per_channel == 2


def test_grouped_convs_prune_the_same_position_in_every_group():
    spec = task("regnetx").spec
    steps = {u.name: u.channel_step for u in spec.units if u.prunable}
    # stage1: 8 channels in 2 groups of 4; stage2: 16 channels in 4 groups of 4
    assert steps == {"stem.0+1": 1, "stage1.conv1.0": 2, "stage1.conv2.0": 2, "stage2.conv1.0": 4, "stage2.conv2.0": 4, "stage2.conv3.0+1": 1}


def test_export_reads_a_calibration_tensor_as_one_batch_and_refuses_bad_batches_with_the_fix():
    context = task("tabular")
    model, x = context.evaluator.model, context.evaluator.data.train.x
    plan = compressed_plan(context.spec)
    one, listed = export(model, plan, x[:8], x), export(model, plan, x[:8], [x])
    assert torch.equal(one(x), listed(x))
    with pytest.raises(InvalidCalibration, match=r"batch 1: \(4, 3\)"):
        export(model, plan, x[:8], [x, torch.zeros(4, 3)])


def test_compress_refuses_an_infeasible_budget_before_the_probes(monkeypatch):
    import metacompress.api as api

    def no_probes(*args, **kwargs):
        raise AssertionError("probes ran before the feasibility check")

    monkeypatch.setattr(api, "compute_probes", no_probes)
    model, shape = build("tabular")
    with pytest.raises(InfeasibleBudget, match="the most compressed plan"):
        api.compress(model, torch.randn(8, *shape), task_data(model, shape), hardware="bismo-edge", budget="bitops=0.001")


def test_ghost_modules_prune_a_channel_with_its_cheap_copy():
    spec = task("ghostnet").spec
    unit = next(u for u in spec.units if u.name == "blocks.0.ghost1.primary.0+1")
    assert unit.prunable and unit.layers == ("blocks.0.ghost1.primary.0", "blocks.0.ghost1.cheap.0")
    consumer = next(layer for layer in spec.layers if layer.name == "blocks.0.ghost2.primary.0")
    assert consumer.in_units == ((unit.index, 2),)  # each channel feeds its own column and its copy's
    gated = next(u for u in spec.units if u.name == "blocks.1.ghost1.primary.0+1")
    assert not gated.prunable and "blocks.1.se.expand has 2 output channels per channel" in gated.reason
    # the residual stream: the ghost projection writes stem channel c + 4 from its copy of channel c, so the two go together
    stream = next(u for u in spec.units if "stem.0" in u.layers)
    assert stream.prunable and stream.channels == 4
    assert next(layer for layer in spec.layers if layer.name == "stem.0").out_per_channel == 2

"""Search mode (masks + fake quant) and export mode (real pruning) agree; the user's model is untouched."""

from __future__ import annotations

import random

import pytest
import torch

from metacompress import Plan, export
from metacompress.compressors import SearchModel, build_graph, count_macs, count_params


def random_plan(spec, seed: int) -> Plan:
    rng = random.Random(seed)
    ratios, w_bits, a_bits = [], [], []
    for unit in spec.units:
        if unit.frozen:
            ratios.append(0.0), w_bits.append(8), a_bits.append(8)
            continue
        ratios.append(rng.choice([0.0, 0.25, 0.5, 0.75]) if unit.prunable else 0.0)
        w_bits.append(rng.randint(2, 8))
        a_bits.append(rng.randint(2, 8))
    return Plan.from_choices(spec, ratios, w_bits, a_bits)


def snapshot(model):
    return {k: v.clone() for k, v in list(model.state_dict().items())}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_and_export_outputs_match(tiny, seed):
    _, model, x = tiny
    before = snapshot(model)
    graph = build_graph(model, x)
    plan = random_plan(graph.spec, seed)
    calibration = [x[:16], x[16:]]
    searched = SearchModel(model, graph, calibration).apply(plan)(x)
    exported_model = export(model, plan, x, calibration, graph=graph)
    exported = exported_model(x)
    assert (searched - exported).abs().max().item() < 1e-4
    # the export is physically smaller, exactly as the accounting says
    assert sum(p.numel() for p in exported_model.parameters()) == count_params(graph.spec, plan.kept)
    # and the user's model is bit-identical afterwards
    after = snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_search_model_reuses_one_copy_and_restores_between_plans(tiny):
    _, model, x = tiny
    graph = build_graph(model, x)
    search = SearchModel(model, graph, [x])
    full = Plan.uniform(graph.spec)
    first = search.apply(full)(x).clone()
    search.apply(random_plan(graph.spec, 5))
    again = search.apply(full)
    assert again is search.model
    assert torch.allclose(first, again(x), atol=1e-6)


@pytest.mark.parametrize("cache_values", [2**24, 40], ids=["cached", "cache-restarting"])
def test_remembered_weight_scales_quantize_as_computed_ones(tiny, monkeypatch, cache_values):
    """Plans sharing some units' masks and bits reuse their layers' scales: the same weights as a fresh copy's."""
    from metacompress.compressors import masking

    _, model, x = tiny
    graph = build_graph(model, x)
    monkeypatch.setattr(masking, "SCALE_CACHE_VALUES", cache_values)
    search = SearchModel(model, graph, [x])
    plans = [random_plan(graph.spec, seed) for seed in (0, 1, 0, 2, 1)]
    plans.append(Plan.from_choices(graph.spec, [d.prune_ratio for d in plans[0].decisions],
                                   [plans[1].decisions[i].w_bits if i % 2 else d.w_bits for i, d in enumerate(plans[0].decisions)],
                                   [d.a_bits for d in plans[0].decisions]))  # plan 0 with every other unit's weight bits from plan 1
    for plan in plans:
        searched = snapshot(search.apply(plan))
        fresh = snapshot(SearchModel(model, graph, [x]).apply(plan))
        assert all(torch.equal(searched[k], fresh[k]) for k in fresh)
    assert search._scale_values <= cache_values


def test_uniform_half_width_halves_quadratic_macs():
    from tiny_models import TinyVGG, example_input

    model = TinyVGG()
    x = example_input(model)
    spec = build_graph(model, x).spec
    half = Plan.uniform(spec, prune=0.5)
    # features.3 (8->12, 3x3 at 8x8): both in and out halve, so its MACs quarter
    assert count_macs(spec, half.kept) < 0.4 * spec.macs()

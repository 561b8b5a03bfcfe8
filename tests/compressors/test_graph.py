"""analyze(): units per architecture, frozen head, unsupported layers, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metacompress import Plan, UnsupportedModel, analyze, export
from tiny_models import TinyMLP, TinyMobileNet, TinyResNet, TinyTransformer, TwoHeads, example_input, trained_like


def test_mlp_units_and_frozen_head():
    model = TinyMLP()
    spec = analyze(model, example_input(model))
    assert [u.name for u in spec.units] == ["fc1", "fc2", "head"]
    head = spec.units[-1]
    assert head.frozen and not head.prunable and "classifier head" in head.reason
    assert spec.layers[0].in_fixed == 16 and spec.layers[1].in_units == ((0, 1),)


def test_a_head_behind_a_softmax_is_a_frozen_head_too():
    spec = analyze(TwoHeads(), torch.randn(4, 8))
    by_name = {u.name: u for u in spec.units}
    for head in ("score", "boxes"):  # score ran first and reaches the output only through softmax and view
        assert by_name[head].frozen and "classifier head" in by_name[head].reason
    assert by_name["trunk"].prunable


def test_residual_stage_is_one_unit():
    model = TinyResNet()
    spec = analyze(model, example_input(model))
    by_name = {u.name: u for u in spec.units}
    # conv2 of the stride-2 block and its projection shortcut are added: one unit
    assert by_name["layer2.conv2+1"].layers == ("layer2.conv2", "layer2.shortcut.0")
    # the stem and layer1's conv2 feed the same identity residual: one unit
    assert by_name["stem.0+1"].layers == ("stem.0", "layer1.conv2")
    assert by_name["stem.0+1"].fp32_per_channel == 4  # two BatchNorms: weight + bias each


def test_depthwise_follows_its_producer():
    model = TinyMobileNet()
    spec = analyze(model, example_input(model))
    unit = next(u for u in spec.units if u.name.startswith("blocks.0.expand"))
    assert unit.layers == ("blocks.0.expand.0", "blocks.0.dw.0")
    dw = next(l for l in spec.layers if l.name == "blocks.0.dw.0")
    assert dw.kind == "depthwise" and dw.in_units == ((unit.index, 1),)


def test_attention_prunes_whole_heads_and_the_layernorm_stream_with_its_position_table():
    model = TinyTransformer(dim=16, head_dim=4)
    x = example_input(model)
    spec = analyze(model, x)
    heads = next(u for u in spec.units if "attn.q" in u.layers)
    assert set(heads.layers) == {"attn.q", "attn.k", "attn.v"} and heads.channel_step == 4
    stream = spec.units[0]
    assert stream.prunable and stream.layers == ("embed", "attn.o", "fc2") and stream.channel_step == 1
    assert stream.fp32_per_channel == 4 + 2 + 2  # a position per token, two LayerNorms' weight and bias
    mlp = next(u for u in spec.units if u.layers == ("fc1",))
    assert mlp.prunable and mlp.channel_step == 1
    plan = Plan.from_choices(spec, [0.5 if u.prunable else 0.0 for u in spec.units], [8] * len(spec.units), [8] * len(spec.units))
    exported = export(model, plan, x, [x])
    assert exported.pos.shape == (1, 4, 8) and exported.ln1.normalized_shape == (8,) and model.pos.shape == (1, 4, 16)
    assert type(model.ln1) is nn.LayerNorm and type(exported.ln1) is nn.LayerNorm  # the private class never leaves


def test_flatten_into_linear_maps_each_channel_to_its_positions():
    from tiny_models import TinyVGG

    model = TinyVGG()
    spec = analyze(model, example_input(model))
    head = spec.layers[-1]
    assert head.in_units == ((1, 16),) and head.in_fixed == 0  # 12 channels x 4x4 positions


def test_user_frozen_layer_is_kept_at_8_bits_unpruned():
    model = TinyMLP()
    spec = analyze(model, example_input(model), frozen=["fc1"])
    assert spec.units[0].frozen and not spec.units[0].prunable and "frozen by the user" in spec.units[0].reason


class WithUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8, max_norm=1.0)  # renormalises its rows in place: left alone
        self.fc = nn.Linear(8, 8)
        self.unused = nn.Linear(3, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens):
        return self.head(torch.relu(self.fc(self.embed(tokens).mean(1))))


def test_unsupported_layers_are_listed_not_fatal():
    model = WithUnsupported()
    spec = analyze(model, torch.randint(0, 10, (2, 5)))
    assert ("embed", "Embedding") in spec.unsupported and ("unused", "Linear") in spec.unsupported
    assert [u.name for u in spec.units] == ["fc", "head"]
    assert "embed (Embedding)" in str(spec)


def test_a_group_whose_tracing_does_not_close_makes_a_quantize_only_unit_not_a_hang(monkeypatch):
    """Torch-Pruning's tracing looped forever on TabNet; past the bound the unit is quantize-only."""
    from metacompress.compressors import groups

    monkeypatch.setattr(groups, "MAX_GROUP_DEPS_PER_NODE", 0)  # every group is "too large"
    model = TinyMLP()
    spec = analyze(model, example_input(model))
    assert not any(u.prunable for u in spec.units)
    assert all("UntraceableGroup" in u.reason for u in spec.units if not u.frozen)
    monkeypatch.undo()
    assert any(u.prunable for u in analyze(model, example_input(model)).units)


def test_no_compressible_layer_is_a_clear_error():
    with pytest.raises(UnsupportedModel, match="no compressible layer"):
        analyze(nn.Sequential(nn.ReLU()), torch.randn(2, 4))


def test_nan_weights_are_named():
    model = TinyMLP()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(UnsupportedModel, match="fc2.weight"):
        analyze(model, example_input(model))


def test_wrong_input_shape_names_the_expected_one():
    from tiny_models import TinyVGG

    with pytest.raises(UnsupportedModel, match=r"expects input of shape \(N, 1, H, W\)"):
        analyze(TinyVGG(), torch.randn(2, 3, 8, 8))


def test_unknown_frozen_name_is_a_clear_error():
    model = TinyMLP()
    with pytest.raises(UnsupportedModel, match="not modules of this model"):
        analyze(model, example_input(model), frozen=["nope"])


def test_spec_table_and_fingerprint_are_stable(tiny):
    _, model, x = tiny
    first, second = analyze(model, x), analyze(model, x)
    assert first.fingerprint == second.fingerprint
    frame = first.to_frame()
    assert len(frame) == len(first.units) and frame["macs"].sum() == first.macs()


class SharedLayer(nn.Module):
    """ALBERT-style weight sharing: one Linear applied four times in a row."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.shared, self.head = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.stem(x)
        for _ in range(4):
            h = h + torch.relu(self.shared(h))
        return self.head(h.mean(1))


def test_a_layer_called_four_times_is_priced_for_every_call_and_sized_once():
    spec = analyze(SharedLayer(), torch.randn(2, 5, 6))
    shared = next(layer for layer in spec.layers if layer.name == "shared")
    assert shared.out_positions == 4 * 5 and shared.macs(16, 16) == 4 * 5 * 16 * 16
    assert shared.weight_count(16, 16) == 16 * 16


def test_a_model_torch_pruning_cannot_trace_is_quantize_only_layer_by_layer_and_still_exports(monkeypatch):
    """Torch-Pruning's tracer fails on some public code (GPT-2 returning its key/value cache); planning goes on without pruning."""
    from metacompress.compressors import graph as graph_module

    def fails(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(graph_module, "dependency_graph", fails)
    model = TinyMLP()
    x = example_input(model)
    spec = analyze(model, x)
    assert [u.layers for u in spec.units] == [(layer.name,) for layer in spec.layers]
    assert not any(u.prunable for u in spec.units)
    assert all("Torch-Pruning cannot trace this model (TypeError" in u.reason for u in spec.units if not u.frozen)
    assert not any("use_cache" in u.reason for u in spec.units)  # that hint is for transformers models only
    plan = Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=4)
    assert all(d.kept_channels == u.channels for d, u in zip(plan.decisions, spec.units))
    small = export(model, plan, x, [x])
    with torch.no_grad():
        assert small(x).shape == model(x).shape


def _passes(rule: str, step: int) -> bool:
    """Whether a trial prune of ``step`` channels passes under ``rule`` ("multiples of N", "4 or 6", "none")."""
    if rule.startswith("multiples of "):
        return step % int(rule.removeprefix("multiples of ")) == 0
    return rule == "4 or 6" and step in (4, 6)


@pytest.mark.parametrize("width, passing, expected_step, trials", [
    (12, "multiples of 4", 4, 4), (12, "none", None, 3), (12, "multiples of 1", 1, 1), (12, "multiples of 6", 6, 5),
    (768, "multiples of 64", 64, 6), (96, "multiples of 24", 24, 6),
    (12, "4 or 6", 4, 4),  # passing steps whose common divisor fails: the finest passing maximal step stands
])
def test_the_finest_consistent_step_is_found_in_few_trials(width, passing, expected_step, trials):
    """Step 1 first, then the maximal steps width/2 and width/3, their common divisor, and a descent below it."""
    from metacompress.compressors import surgery

    search, tried, verdict = surgery._step_search(width), [], None
    with pytest.raises(StopIteration) as finished:
        while True:
            tried.append(search.send(verdict))
            verdict = _passes(passing, tried[-1])
    assert finished.value.value == expected_step and len(tried) == trials and len(set(tried)) == trials


def test_unit_searches_share_their_trials(monkeypatch):
    """Four attention-like units (heads of 64 channels) and two that prune channel by channel:
    step 1 unit by unit, then each round of the searches tried together, unit by unit only when it fails."""
    from metacompress.compressors import surgery
    from metacompress.compressors.spec import UnitSpec

    rules = {f"attn{i}": "multiples of 64" for i in range(4)} | {"mlp0": "multiples of 1", "mlp1": "multiples of 1"}
    calls = []

    def consistent(model, example, graphs, removed):
        calls.append(len(graphs))
        return all(_passes(rules[g.root], len(r)) for g, r in zip(graphs, removed))

    monkeypatch.setattr(surgery, "prunes_consistently", consistent)
    monkeypatch.setattr(surgery, "rank_channels", lambda model, graph, channels, step: torch.arange(channels))
    units = [UnitSpec(index=i, name=root, layers=(root,), channels=768 if root.startswith("attn") else 96)
             for i, root in enumerate(rules)]
    graphs = [surgery.UnitGraph(root=root, removal_order=torch.arange(u.channels)) for root, u in zip(rules, units)]
    verified = surgery.verify_units(None, None, units, graphs)
    assert [u.channel_step for u in verified] == [64, 64, 64, 64, 1, 1] and all(u.prunable for u in verified)
    # all at step 1 together; each at step 1; 384, 256, 128, 64 together; 32 together, then each
    assert calls == [6] + [1] * 6 + [4] * 5 + [1] * 4


class _WithAuxHead(TinyMLP):
    """An auxiliary classifier that runs only in training mode, as GoogLeNet's ``aux_logits``."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(24, 5)

    def forward(self, x):
        hidden = torch.relu(self.fc1(x.flatten(1)))
        out = self.head(torch.relu(self.fc2(hidden)))
        return (out, self.aux(hidden)) if self.training else out


def test_layers_run_only_in_training_mode_stop_pruning_so_the_fine_tune_still_runs():
    model = _WithAuxHead()
    x = example_input(model)
    spec = analyze(model, x)
    assert not any(u.prunable for u in spec.units)
    assert all("layers aux run only in training mode" in u.reason and "aux_logits=False" in u.reason
               for u in spec.units if not u.frozen)
    small = export(model, Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=4), x, [x]).train()
    assert small(x)[1].shape == (len(x), 5)  # the auxiliary head still gets its 24 input features


def test_grouping_derives_index_mappings_again_only_after_a_shape_changes(monkeypatch):
    """The indexed group walk gives Torch-Pruning's own groups, and re-derives the mappings only when pruning changed a shape."""
    import torch_pruning as tp
    from torch_pruning.dependency import index_mapping

    from metacompress.compressors import surgery

    model = trained_like(TinyResNet())
    graph = surgery.dependency_graph(model, example_input(model))
    derived = []
    update = index_mapping.update_index_mapping
    monkeypatch.setattr(index_mapping, "update_index_mapping", lambda g: (derived.append(1), update(g)))

    def described(group) -> list[tuple[str, list[int]]]:
        return [(f"{item.dep.target.name}:{item.dep.handler.__name__}", list(item.idxs)) for item in group.items]

    roots = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    ours = [described(graph.get_pruning_group(m, tp.prune_conv_out_channels, [0, 2])) for m in roots]
    assert len(derived) == 1  # once for every group of the unchanged model
    plain = [described(tp.DependencyGraph.get_pruning_group(graph, m, tp.prune_conv_out_channels, [0, 2])) for m in roots]
    assert ours == plain  # Torch-Pruning's own walk (it derives the mappings every time)

    graph.get_pruning_group(roots[0], tp.prune_conv_out_channels, [1]).prune()
    derived.clear()
    graph.get_pruning_group(roots[-1], tp.prune_conv_out_channels, [0])
    assert len(derived) == 1  # a channel fewer: derived again


@pytest.mark.parametrize("pruning_fails", [False, True], ids=["pruned", "pruning-fails"])
def test_a_trial_prune_masks_analysis_copy_in_place_and_restores_it(monkeypatch, pruning_fails):
    from metacompress.compressors import surgery
    from metacompress.compressors.graph import build_graph

    model = trained_like(TinyResNet())
    x = example_input(model)
    graph = build_graph(model, x)
    work = surgery.plain_copy(model).eval()
    before = {k: v.clone() for k, v in work.state_dict().items()}
    if pruning_fails:
        monkeypatch.setattr(surgery, "prune_units", lambda *args: 1 / 0)
    units = [(u, g) for u, g in zip(graph.spec.units, graph.units) if u.prunable]
    removed = [g.removed_channels(u, u.channels // 2) for u, g in units]
    assert surgery.prunes_consistently(work, x, [g for _, g in units], removed) is not pruning_fails
    assert all(torch.equal(before[k], v) for k, v in work.state_dict().items())

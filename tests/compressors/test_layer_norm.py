"""A LayerNorm over pruned channels: masked, it normalises over the kept channels as the pruned norm does."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metacompress import Plan, analyze, export
from metacompress.compressors import SearchModel, build_graph
from metacompress.compressors.layer_norm import as_maskable, clear_removed, mark_removed, maskable
from tiny_models import TinyTransformer, example_input


def test_a_masked_layer_norm_computes_what_the_pruned_norm_computes_and_forgets_its_mask():
    torch.manual_seed(0)
    norm = nn.LayerNorm(6)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3), norm.bias.normal_(0, 0.3)
    kept, removed = [0, 2, 3, 5], [1, 4]
    pruned = nn.LayerNorm(4)
    with torch.no_grad():
        pruned.weight.copy_(norm.weight[kept]), pruned.bias.copy_(norm.bias[kept])
    masked = as_maskable(copy.deepcopy(norm))
    mark_removed(masked, torch.tensor(removed))
    x = torch.randn(3, 5, 6, requires_grad=True)
    out = masked(x)
    assert torch.allclose(out[..., kept], pruned(x[..., kept]), atol=1e-6) and not out[..., removed].any()
    assert not torch.allclose(out[..., kept], norm(x)[..., kept], atol=1e-3)  # the full norm's statistics differ
    out.sum().backward()  # KD steps in search mode train through it
    assert not x.grad[..., removed].any() and x.grad[..., kept].abs().sum() > 0
    clear_removed([masked])
    assert torch.equal(masked(x), norm(x))


def test_a_search_model_forgets_the_last_plans_removed_stream_channels():
    model = TinyTransformer(dim=16, head_dim=4).eval()
    x = example_input(model, batch=16)
    graph = build_graph(model, x)
    search = SearchModel(model, graph, [x])
    full = Plan.uniform(graph.spec)
    first = search.apply(full)(x).clone()
    assert maskable(search.model.ln1) and not maskable(model.ln1)  # the user's norms keep their forward
    search.apply(Plan.from_choices(graph.spec, [0.5, 0.0, 0.0, 0.0], [8] * 4, [8] * 4))  # half the stream
    assert search.model.ln1.forward.removed.sum() == 8
    assert torch.equal(search.apply(full)(x), first) and search.model.ln1.forward.removed is None


class LayerNorm2d(nn.LayerNorm):
    """timm's and ConvNeXt's channels-first LayerNorm: its own forward permutes around ``F.layer_norm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class HandWrittenLayerNorm2d(nn.Module):
    """ConvNeXt's reference channels-first LayerNorm: its statistics computed by hand, no ``F.layer_norm``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def conv_norm_conv(norm: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), norm, nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


class GroupNorm1(nn.GroupNorm):
    """timm's PoolFormer norm: one group (statistics over channels and positions), its own forward."""

    def __init__(self, channels: int) -> None:
        super().__init__(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, num_groups=self.num_groups, weight=self.weight, bias=self.bias, eps=self.eps)  # by name


@pytest.mark.parametrize("norm", [LayerNorm2d, GroupNorm1])
def test_a_norm_subclass_with_its_own_forward_prunes_through_its_norm_call(norm):
    torch.manual_seed(0)
    model, x = conv_norm_conv(norm(8)), torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        model[1].weight.normal_(1, 0.3), model[1].bias.normal_(0, 0.3)
    graph = build_graph(model, x)
    assert graph.spec.units[0].prunable and graph.spec.units[0].fp32_per_channel == 2
    plan = Plan.from_choices(graph.spec, [0.5, 0.0, 0.0], [8] * 3, [8] * 3)
    exported = export(model, plan, x, [x], graph=graph)
    assert exported[1].weight.shape == (4,) and not maskable(exported[1])
    assert torch.allclose(exported(x), SearchModel(model, graph, [x]).apply(plan)(x), atol=1e-5)


def test_a_group_norm_of_several_groups_stays_quantize_only():
    spec = analyze(conv_norm_conv(nn.GroupNorm(2, 8)), torch.randn(4, 1, 8, 8))
    assert not spec.units[0].prunable and "(GroupNorm) normalises across these channels" in spec.units[0].reason


def test_a_norm_computing_its_statistics_by_hand_stays_quantize_only():
    spec = analyze(conv_norm_conv(HandWrittenLayerNorm2d(8)), torch.randn(4, 1, 8, 8))
    assert not spec.units[0].prunable and spec.units[1].prunable

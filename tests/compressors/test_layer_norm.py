"""A LayerNorm or RMSNorm over pruned channels: masked, it normalises over the kept channels as the pruned norm does."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metacompress import Plan, analyze, export, load_compressed, save_compressed
from metacompress.compressors import SearchModel, build_graph
from metacompress.compressors.layer_norm import as_maskable, clear_removed, mark_removed, maskable, standard_form
from tiny_models import TinyTransformer, example_input


@pytest.mark.parametrize("kind", [nn.LayerNorm, nn.RMSNorm])
def test_a_masked_norm_computes_what_the_pruned_norm_computes_and_forgets_its_mask(kind):
    torch.manual_seed(0)
    norm = kind(6)
    kept, removed = [0, 2, 3, 5], [1, 4]
    pruned = kind(4)
    for name, _ in norm.named_parameters():
        with torch.no_grad():
            getattr(norm, name).normal_(float(name == "weight"), 0.3)
            getattr(pruned, name).copy_(getattr(norm, name)[kept])
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


class ChannelsFirstLayerNorm(HandWrittenLayerNorm2d):
    """ConvNeXt's reference LayerNorm as published: the same statistics, its epsilon an attribute."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt((x - mean).pow(2).mean(1, keepdim=True) + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LlamaRMSNorm(nn.Module):
    """Llama's, Mistral's and Qwen's RMSNorm (transformers), by hand: no ``F.rms_norm``, its epsilon under its own name."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(torch.ones(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x


class RmsNorm2d(nn.Module):
    """timm's channels-first RmsNorm, by hand, with a ``normalized_shape`` it reads only the length of."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight, self.eps, self.normalized_shape = nn.Parameter(torch.ones(channels)), 1e-5, (channels,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(self.normalized_shape) == 1
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.reshape(1, -1, 1, 1)


class GemmaRMSNorm(LlamaRMSNorm):
    """Gemma's RMSNorm: its weight stores the scale's offset from 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * (1 + self.weight)


class SimpleNorm(LlamaRMSNorm):
    """timm's ``SimpleNorm``: divides by the (unbiased) standard deviation without centring, a standard norm of nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.var(-1, keepdim=True) + self.variance_epsilon) * self.weight


class ChannelsLast(nn.Module):
    """Runs a norm over the channels of a (N, C, H, W) map moved last, as a transformer's stream is laid out."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def conv_norm_conv(norm: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), norm, nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


class GroupNorm1(nn.GroupNorm):
    """timm's PoolFormer norm: one group (statistics over channels and positions), its own forward."""

    def __init__(self, channels: int) -> None:
        super().__init__(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, num_groups=self.num_groups, weight=self.weight, bias=self.bias, eps=self.eps)  # by name


@pytest.mark.parametrize("norm, affine", [(LayerNorm2d, 2), (GroupNorm1, 2), (ChannelsFirstLayerNorm, 2),
                                          (lambda c: ChannelsLast(nn.RMSNorm(c)), 1), (lambda c: ChannelsLast(LlamaRMSNorm(c)), 1),
                                          (RmsNorm2d, 1), (lambda c: ChannelsLast(GemmaRMSNorm(c)), 1)])
def test_a_norm_with_its_own_forward_prunes_through_its_norm_call_or_what_it_computes(norm, affine):
    torch.manual_seed(0)
    model, x = conv_norm_conv(norm(8)), torch.randn(16, 1, 8, 8)
    for p in model[1].parameters():
        with torch.no_grad():
            p.normal_(0.5, 0.3)
    graph = build_graph(model, x)
    assert graph.spec.units[0].prunable and graph.spec.units[0].fp32_per_channel == affine
    plan = Plan.from_choices(graph.spec, [0.5, 0.0, 0.0], [8] * 3, [8] * 3)
    exported = export(model, plan, x, [x], graph=graph)
    normed = next(m for m in exported[1].modules() if "weight" in m._parameters)
    assert normed.weight.shape == (4,) and getattr(normed, "normalized_shape", (4,)) == (4,) and not maskable(normed)
    assert torch.allclose(exported(x), SearchModel(model, graph, [x]).apply(plan)(x), atol=1e-5)


class ResidualStream(nn.Module):
    """A stream of 16 channels, normalised before the block that writes back into it."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.embed, self.norm, self.up, self.down, self.head = nn.Linear(8, 16), norm, nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head(h + self.down(torch.relu(self.up(self.norm(h)))))


@pytest.mark.parametrize("norm", [nn.LayerNorm(16, elementwise_affine=False), nn.RMSNorm(16, elementwise_affine=False),
                                  nn.GroupNorm(1, 16, affine=False), nn.GroupNorm(4, 16, affine=False)], ids=repr)
def test_a_norm_without_affine_parameters_prunes_with_its_stream(norm):
    """Nothing of it to slice, but its statistics must still leave the removed channels out (it was quantize-only)."""
    torch.manual_seed(0)
    model, x = ResidualStream(norm).eval(), torch.randn(32, 8)
    graph = build_graph(model, x)
    stream = graph.spec.units[0]
    assert stream.prunable and stream.fp32_per_channel == 0 and "norm" in {t.module for t in graph.units[0].targets}
    plan = Plan.from_choices(graph.spec, [0.5, 0.0, 0.0], [8] * 3, [8] * 3)
    exported = export(model, plan, x, [x], graph=graph)
    assert torch.allclose(exported(x), SearchModel(model, graph, [x]).apply(plan)(x), atol=1e-5)


def test_a_group_norm_of_several_groups_loses_as_many_channels_in_every_group():
    torch.manual_seed(0)
    model, x = conv_norm_conv(nn.GroupNorm(2, 8)), torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        model[1].weight.normal_(1, 0.3), model[1].bias.normal_(0, 0.3)
    graph = build_graph(model, x)
    unit = graph.spec.units[0]
    assert unit.prunable and unit.channel_step == 2 and graph.units[0].channel_groups == 2
    removed = graph.units[0].removed_channels(unit, 4)
    assert sorted((removed < 4).tolist()) == [False, False, True, True]  # two from each group of four
    plan = Plan.from_choices(graph.spec, [0.5, 0.0, 0.0], [8] * 3, [8] * 3)
    exported = export(model, plan, x, [x], graph=graph)
    assert (exported[1].num_groups, exported[1].num_channels) == (2, 4)
    assert torch.allclose(exported(x), SearchModel(model, graph, [x]).apply(plan)(x), atol=1e-5)


def test_a_group_norm_of_one_channel_per_group_loses_any_channel_with_its_group_and_reloads(tmp_path):
    torch.manual_seed(0)
    model, x = conv_norm_conv(nn.GroupNorm(8, 8)), torch.randn(16, 1, 8, 8)
    graph = build_graph(model, x)
    assert graph.spec.units[0].prunable and graph.spec.units[0].channel_step == 1
    plan = Plan.from_choices(graph.spec, [0.375, 0.0, 0.0], [8] * 3, [8] * 3)
    exported = export(model, plan, x, [x], graph=graph)
    assert (exported[1].num_groups, exported[1].num_channels) == (5, 5)
    assert torch.allclose(exported(x), SearchModel(model, graph, [x]).apply(plan)(x), atol=1e-5)
    save_compressed(exported, tmp_path / "model")
    assert torch.equal(load_compressed(tmp_path / "model", conv_norm_conv(nn.GroupNorm(8, 8)))(x), exported(x))


class TwoBranchesOneGroupNorm(nn.Module):
    """Two convs concatenated under one GroupNorm: each unit holds half its channels, and pruning one alone would cut its groups unevenly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.norm, self.head = nn.Conv2d(1, 8, 3), nn.Conv2d(1, 8, 3), nn.GroupNorm(4, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(torch.cat([self.a(x), self.b(x)], 1))).mean((2, 3)))


def test_a_group_norm_a_unit_holds_only_part_of_stays_quantize_only():
    spec = analyze(TwoBranchesOneGroupNorm().eval(), torch.randn(4, 1, 8, 8))
    assert [u.prunable for u in spec.units[:2]] == [False, False]
    assert "norm (GroupNorm, partly) normalises across these channels" in spec.units[0].reason


@pytest.mark.parametrize("norm", [HandWrittenLayerNorm2d, lambda c: ChannelsLast(SimpleNorm(c))])
def test_a_hand_written_norm_that_is_no_standard_norm_of_its_own_parameters_stays_quantize_only(norm):
    """A hard-coded epsilon, a standard deviation without centring: the trial prune finds masking and pruning disagree."""
    spec = analyze(conv_norm_conv(norm(8)), torch.randn(4, 1, 8, 8))
    assert not spec.units[0].prunable and spec.units[1].prunable


def test_recognising_a_hand_written_norm_runs_it_without_touching_the_users_module():
    batch_norm = nn.BatchNorm1d(8).train()  # a weight, a bias and an eps, but running statistics a call would update
    assert standard_form(batch_norm) is None and not batch_norm.num_batches_tracked
    llama = LlamaRMSNorm(8)
    before = llama.weight.detach().clone()
    assert standard_form(llama) is not None and torch.equal(llama.weight, before)
    assert standard_form(SimpleNorm(8)) is None and standard_form(GemmaRMSNorm(8)) is not None

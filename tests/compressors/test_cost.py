"""Exact accounting, checked against values worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

from metacompress import Plan, analyze, export
from metacompress.compressors import count_bitops, count_macs, count_params, reference_cost, size_bits, total_cost
from metacompress.compressors.cost import layer_size_bits, unit_cost_shares


class ConvThenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def setup():
    model = ConvThenHead()
    spec = analyze(model, torch.randn(2, 3, 5, 5))
    plan = Plan.from_choices(spec, [1 / 3, 0.0], [4, 8], [4, 8])
    return model, spec, plan


def test_hand_computed_macs_params_bitops_and_size():
    _, spec, plan = setup()
    assert plan.kept == (4, 2)
    # conv: 25 positions x 4 out x 9 taps x 3 in; head: 4 in x 2 out
    assert count_macs(spec, plan.kept) == 25 * 4 * 9 * 3 + 4 * 2 == 2708
    assert count_params(spec, plan.kept) == (4 * 9 * 3 + 4) + (2 * 4 + 2) == 122
    assert count_bitops(spec, plan.kept, plan.w_bits, plan.a_bits) == 2700 * 4 * 4 + 8 * 8 * 8
    # conv: 108 weights x 4 bits + (4 scales + 4 biases) x 32 + activation scale/zero-point 64
    conv_bits = 108 * 4 + 8 * 32 + 64
    head_bits = 8 * 8 + 4 * 32 + 64
    assert size_bits(spec, plan.kept, plan.w_bits) == conv_bits + head_bits == 1008
    assert layer_size_bits(spec.layers[0], 3, 4, 4) == conv_bits


def test_reference_is_unpruned_w8a8_and_budget_ratio_follows():
    _, spec, plan = setup()
    reference = reference_cost(spec, "bitops")
    assert reference == (25 * 6 * 9 * 3 + 6 * 2) * 64
    ratio = total_cost(spec, "bitops", plan.kept, plan.w_bits, plan.a_bits) / reference
    assert abs(ratio - 43712 / reference) < 1e-12


def test_cost_shares_sum_to_one_and_follow_macs():
    _, spec, plan = setup()
    shares = unit_cost_shares(spec, "bitops", plan.kept, plan.w_bits, plan.a_bits)
    assert abs(sum(shares) - 1) < 1e-12 and shares[0] > 0.98


def test_params_count_matches_the_exported_model(tiny):
    _, model, x = tiny
    spec = analyze(model, x)
    plan = Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=4)
    compressed = export(model, plan, x, [x])
    assert sum(p.numel() for p in compressed.parameters()) == count_params(spec, plan.kept)
    assert count_params(spec, spec.full_kept) == spec.total_params

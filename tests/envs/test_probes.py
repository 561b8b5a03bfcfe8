"""Hessian-trace probes: exact double backward, the finite-difference fallback, the cache format."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs import probes
from metacompress.envs.probes import PROBES_FORMAT, ModelProbes, UnitProbes, hessian_batch, hessian_traces
from metacompress.errors import CacheCorrupted, MetacompressError
from tiny_world import Data, Split




class SmoothNet(nn.Module):
    """Smooth activations only, so double backward and finite differences see the same curvature."""

    def __init__(self, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gate = gate()
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = F.gelu(self.conv(x))
        h = h * self.gate(h.mean(dim=(2, 3), keepdim=True))  # an SE-style gate
        return self.head(torch.tanh(self.fc(h.mean(dim=(2, 3)))))


def evaluator_for(model: nn.Module) -> ModelEvaluator:
    """Labels from a different random model, so the loss is not at a minimum."""
    torch.manual_seed(0)
    x = torch.randn(96, 3, 6, 6)
    y = torch.randint(0, 4, (96,))
    return ModelEvaluator(model.eval(), Data(Split(x[:32], y[:32]), Split(x[32:64], y[32:64]), Split(x[64:], y[64:])))


def test_finite_differences_match_double_backward_on_a_smooth_model():
    torch.manual_seed(0)
    evaluator = evaluator_for(SmoothNet())
    exact, used_exact = hessian_traces(evaluator, estimator="exact")
    approx, used_approx = hessian_traces(evaluator, estimator="finite-difference")
    assert (used_exact, used_approx) == ("exact", "finite-difference")
    assert len(exact) == len(evaluator.spec.units) == 3
    for e, a in zip(exact, approx):
        assert a == pytest.approx(e, rel=1e-3, abs=1e-6)
    assert max(abs(e) for e in exact) > 1e-3  # the comparison is not between zeros


def test_the_hessian_batch_shrinks_only_on_models_larger_than_the_zoo(monkeypatch):
    assert hessian_batch(12_281_088) == 512  # the largest zoo model keeps the full batch
    assert hessian_batch(148_050_944) == 108  # a ResNet-18 at 64x64
    assert hessian_batch(4_100_000_000) == 64  # a ResNet-50 at 224x224: the floor
    evaluator = evaluator_for(SmoothNet())
    full, _ = hessian_traces(evaluator)
    monkeypatch.setattr(probes, "HESSIAN_MIN_BATCH", 8)
    monkeypatch.setattr(probes, "HESSIAN_SAMPLE_MACS", 8 * evaluator.spec.macs())  # 8 of the 32 train samples
    fewer, _ = hessian_traces(evaluator)
    assert len(fewer) == len(full) and fewer != full  # the traces came from the smaller batch


def test_hardsigmoid_gate_falls_back_to_finite_differences():
    torch.manual_seed(0)
    evaluator = evaluator_for(SmoothNet(gate=nn.Hardsigmoid))
    with pytest.raises(RuntimeError, match="derivative for .*hardsigmoid_backward is not implemented"):
        hessian_traces(evaluator, estimator="exact")
    traces, used = hessian_traces(evaluator)
    assert used == "finite-difference"
    assert all(math.isfinite(t) for t in traces) and sum(traces) > 0
    # same weights with a smooth gate: the curvature is of the same size
    torch.manual_seed(0)
    smooth, _ = hessian_traces(evaluator_for(SmoothNet()), estimator="exact")
    assert sum(traces) == pytest.approx(sum(smooth), rel=0.5)


def test_unknown_estimator_is_refused():
    with pytest.raises(MetacompressError, match="Hessian estimator 'lbfgs' is unknown; use one of auto, exact"):
        hessian_traces(evaluator_for(SmoothNet()), estimator="lbfgs")


def test_cache_records_the_estimator_and_refuses_the_old_format():
    probes = ModelProbes("abc", (UnitProbes(hessian_trace=1.5, weight_count=3),), "finite-difference")
    again = ModelProbes.from_json(probes.to_json())
    assert again == probes and again.hessian_estimator == "finite-difference"
    old = probes.to_json().replace(f'"format": {PROBES_FORMAT}', '"format": 1')
    with pytest.raises(CacheCorrupted, match="delete it and it will be recomputed"):
        ModelProbes.from_json(old)


def test_a_cache_of_the_old_format_is_recomputed_not_misread(tmp_path):
    from metacompress.envs.probes import load_or_compute_probes, probe_fingerprint

    torch.manual_seed(0)
    evaluator = evaluator_for(SmoothNet())
    cache = tmp_path / "smooth.probes.json"
    stale = ModelProbes(probe_fingerprint(evaluator), tuple(UnitProbes(hessian_trace=99.0) for _ in evaluator.spec.units))
    cache.write_text(stale.to_json().replace(f'"format": {PROBES_FORMAT}', '"format": 1'))
    probes = load_or_compute_probes(evaluator, cache)
    assert probes.hessian_estimator == "exact" and probes.units[0].hessian_trace != 99.0
    assert ModelProbes.from_json(cache.read_text()) == probes

"""``nn.LSTM`` / ``nn.GRU`` are compressed through ``UnrolledRNN``: the same outputs, then
quantized weights and per-step pricing, saved, reloaded and exported like any layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors import recovery
from metacompress.compressors.export import load_compressed
from metacompress.compressors.onnx_export import export_onnx, onnx_agreement
from metacompress.compressors.recurrent import UnrolledRNN
from metacompress.compressors.surgery import plain_copy


@pytest.mark.parametrize("kind, proj_size", [(nn.LSTM, 0), (nn.LSTM, 4), (nn.GRU, 0)])
@pytest.mark.parametrize("batch_first, bidirectional", [(True, False), (False, True)])
def test_unrolled_rnn_computes_what_the_built_in_layer_computes(kind, proj_size, batch_first, bidirectional):
    torch.manual_seed(0)
    rnn = kind(5, 7, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, **({"proj_size": proj_size} if proj_size else {})).eval()
    unrolled = UnrolledRNN(rnn).eval()
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    h0 = torch.randn(2 * (1 + bidirectional), 3, proj_size or 7)
    state = (h0, torch.randn(2 * (1 + bidirectional), 3, 7)) if kind is nn.LSTM else h0
    for args in ((x,), (x, state), (torch.randn(6, 5),)):  # default state, a given state, one unbatched sequence
        expected, expected_state = rnn(*args)
        got, got_state = unrolled(*args)
        assert torch.allclose(got, expected, atol=1e-5)
        for e, g in zip(expected_state if kind is nn.LSTM else (expected_state,), got_state if kind is nn.LSTM else (got_state,)):
            assert torch.allclose(g, e, atol=1e-5)


def test_unrolled_rnn_passes_the_built_in_layers_gradient_to_its_input():
    torch.manual_seed(0)
    rnn = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    unrolled = UnrolledRNN(rnn)
    x = torch.randn(3, 6, 5, requires_grad=True)
    expected = torch.autograd.grad(rnn(x)[0].square().sum(), x)[0]
    assert torch.allclose(torch.autograd.grad(unrolled(x)[0].square().sum(), x)[0], expected, atol=1e-5)


class LastStep(nn.Module):
    """An LSTM read at its last time step."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0][:, -1]


def test_recovery_quantizes_a_recurrent_weight_once_per_step_not_once_per_time_step(monkeypatch):
    """Re-quantizing the recurrent Linear at each time step made an LSTM's recovery T times slower."""
    calls = []
    monkeypatch.setattr(recovery, "quantize_weight", lambda w, bits: calls.append(bits) or w)
    counts = []
    for steps in (10, 40):
        calls.clear()
        rnn = nn.LSTM(4, 8, batch_first=True)
        student = LastStep(UnrolledRNN(rnn))
        recovery.distill(student, LastStep(rnn), torch.randn(8, steps, 4), {"rnn.ih_l0": 4, "rnn.hh_l0": 4}, steps=2)
        counts.append(len(calls))
    assert counts[0] == counts[1]


def test_an_lstm_with_a_projection_is_unrolled_with_its_projection_as_a_linear():
    model = nn.Sequential(nn.LSTM(4, 8, proj_size=3))
    unrolled = plain_copy(model)[0]
    assert isinstance(unrolled, UnrolledRNN) and unrolled.hr_l0.weight.shape == (3, 8) and unrolled.hr_l0.bias is None


class Keyword(nn.Module):
    """A keyword-spotting net: a strided conv front end, a 2-layer LSTM (projected or not), the last step's head."""

    def __init__(self, proj_size: int = 0) -> None:
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(2, 8, 4, stride=2), nn.ReLU())
        self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True, proj_size=proj_size)
        self.head = nn.Linear(proj_size or 12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.front(x).transpose(1, 2))[0][:, -1])


@pytest.mark.parametrize("proj_size", [0, 6])
def test_an_lstm_is_quantized_priced_per_step_saved_and_exported(tmp_path, proj_size):
    torch.manual_seed(0)
    model, x = Keyword(proj_size).eval(), torch.randn(120, 2, 20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        data = mc.splits_from_arrays(x.numpy(), model(x).argmax(1).numpy(), seed=0)
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="bitops=0.3", planner=HawqPlanner(), finetune_steps=5, seed=0)
    assert result.summary["within_budget"] and not result.summary["untouched_layers"]
    bits = result.model.metacompress_weight_bits
    parts = ("ih", "hh", "hr") if proj_size else ("ih", "hh")
    assert {f"lstm.{part}_l{layer}" for part in parts for layer in (0, 1)} <= set(bits)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert isinstance(model.lstm, nn.LSTM)

    result.save(tmp_path / "run")
    reloaded = load_compressed(tmp_path / "run" / "model", Keyword(proj_size))
    assert torch.allclose(reloaded(x), result.model(x), atol=1e-6)
    agreement = onnx_agreement(result.model, export_onnx(result.model, tmp_path / "kws.onnx", x[:2]), x, result.model(x).argmax(1))
    assert agreement["difference_points"] == 0

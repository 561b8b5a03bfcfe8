"""Weight norm and spectral norm (locuslab's TCN, WaveNet-style code): folded into plain weights
in a private copy, so probes, planning, export and reload work and the user's model keeps them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, weight_norm

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors.surgery import plain_copy, weight_reparametrizations

WRAPPERS = {
    "weight_norm": parametrizations.weight_norm,  # torch.nn.utils.parametrize
    "old-weight_norm": weight_norm,  # forward pre-hook, as the TCN reference code uses
    "spectral_norm": parametrizations.spectral_norm,
}


class TemporalBlock(nn.Module):
    """Two causal dilated convs under a reparametrization, with a 1x1 residual projection."""

    def __init__(self, wrap, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.pad = 2 * dilation
        self.conv1 = wrap(nn.Conv1d(cin, cout, 3, padding=self.pad, dilation=dilation))
        self.conv2 = wrap(nn.Conv1d(cout, cout, 3, padding=self.pad, dilation=dilation))
        self.down = nn.Conv1d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x)[:, :, : -self.pad])
        h = F.relu(self.conv2(h)[:, :, : -self.pad])
        return F.relu(h + self.down(x))


def tcn(wrap) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(TemporalBlock(wrap, 1, 12, 1), TemporalBlock(wrap, 12, 12, 2), nn.Flatten(), nn.Linear(12 * 24, 4)).eval()


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_reparametrized_model_compresses_exports_and_reloads_and_keeps_its_reparametrization(kind, tmp_path):
    wrap = WRAPPERS[kind]
    model = tcn(wrap)
    x = torch.randn(120, 1, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
    copied = plain_copy(model)
    assert weight_reparametrizations(copied) == [] and len(weight_reparametrizations(model)) == 4
    assert isinstance(copied[0].conv1.weight, nn.Parameter)
    with torch.no_grad():
        assert torch.allclose(copied(x), reference, atol=1e-5)

    data = mc.splits_from_arrays(x, reference.argmax(-1))
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    assert result.summary["within_budget"]
    assert len(weight_reparametrizations(model)) == 4  # the user's model is as it was
    with torch.no_grad():
        assert torch.equal(model(x), reference)

    mc.save_compressed(result.model, tmp_path / "model")
    again = mc.load_compressed(tmp_path / "model", tcn(wrap))
    with torch.no_grad():
        assert torch.allclose(again(x), result.model(x), atol=1e-5)

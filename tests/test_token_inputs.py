"""Models that read integer token ids (an ``nn.Embedding`` first, as every text model does):
the ids stay integers from the user's arrays through planning, recovery and ONNX."""

from __future__ import annotations

import torch
from torch import nn

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors.onnx_export import export_onnx, onnx_agreement

VOCAB, LENGTH, CLASSES = 40, 12, 3


class TokenClassifier(nn.Module):
    """Embedding, one built-in ``nn.TransformerEncoderLayer`` (fused attention at inference), mean-pool, head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.encoder = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(1))


def token_task(samples: int = 120) -> tuple[nn.Module, torch.Tensor, object]:
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    ids = torch.randint(0, VOCAB, (samples, LENGTH), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(ids).argmax(-1)
    return model, ids, mc.splits_from_arrays(ids.numpy(), labels.numpy())


def test_token_ids_stay_integers_and_compress_exports_to_onnx_that_agrees(tmp_path):
    model, ids, data = token_task()
    assert data.train.x.dtype == torch.long and data.search.x.dtype == torch.long
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = mc.compress(model, ids[:8], data, hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    assert result.summary["within_budget"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert not any("(MultiheadAttention)" in layer for layer in result.summary["untouched_layers"])
    assert {"encoder.self_attn.q", "encoder.self_attn.out_proj"} <= set(result.model.metacompress_weight_bits)
    result.save(tmp_path / "run")
    assert "encoder.self_attn.q" in (tmp_path / "run" / "report.md").read_text()

    path = export_onnx(result.model, tmp_path / "tokens.onnx", ids[:8])  # the fused attention kernel has no ONNX op
    agreement = onnx_agreement(result.model, path, data.test.x, data.test.y)
    assert abs(agreement["difference_points"]) <= 100 / len(data.test.y) + 1e-9  # at most one sample flips

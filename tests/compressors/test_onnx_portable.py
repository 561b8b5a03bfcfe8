"""Ops the ONNX exporter or onnxruntime refuse: each rewrite computes torch's op, and models using them export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metacompress import Plan, analyze, export
from metacompress.compressors.onnx_export import onnx_logits, session, to_onnx
from metacompress.compressors.onnx_portable import PortableOps
from tiny_models import trained_like


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


CALLS = {  # name: a call of each rewritten op, as public model code makes it
    "diff": lambda: torch.diff(_x(3, 5, 7)),
    "diff-n2-dim1": lambda: _x(3, 5, 7).diff(n=2, dim=1),
    "diff-prepend-append": lambda: torch.diff(_x(3, 7), dim=1, prepend=_x(3, 1) - 1, append=_x(3, 2)),
    "diff-bool": lambda: (_x(3, 7) > 0).diff(dim=-1),
    "cumsum-bool": lambda: (_x(3, 7) > 0).cumsum(-1),
    "cumsum-int": lambda: torch.cumsum(torch.arange(6, dtype=torch.int32), 0),
    "tensor-split-sections": lambda: torch.tensor_split(_x(3, 5, 7), 3, dim=2),
    "tensor-split-points": lambda: torch.tensor_split(_x(3, 5, 7), [2, 5], dim=-1),
    "tensor-split-past-end": lambda: _x(3, 5, 7).tensor_split([1, 9], dim=1),
    "conv-same-dilated-1d": lambda: F.conv1d(_x(2, 3, 16), _x(4, 3, 4), padding="same", dilation=3),
    "conv-same-dilated-2d": lambda: F.conv2d(_x(2, 3, 5, 16), _x(4, 3, 1, 4), _x(4), padding="same", dilation=(1, 2)),
    "fold-patches": lambda: F.fold(_x(2, 3 * 4, 9), (6, 6), 2, stride=2),
    "fold-overlapping-padded": lambda: F.fold(_x(2, 3 * 9, 16), (7, 8), 3, padding=1, stride=2),
    "fold-dilated-unbatched": lambda: F.fold(_x(3 * 4, 6), (5, 9), 2, stride=(2, 3), dilation=(1, 2)),
    "windows-overlapping": lambda: _x(2, 3, 9, 8).unfold(2, 4, 2),
    "windows-chained-last-dim": lambda: _x(2, 3, 8, 8).unfold(-1, 3, 3).unfold(2, 2, 1),
    "windows-whole-axis": lambda: _x(5, 4).unfold(0, 5, 1),
    "pool-2d-up": lambda: F.adaptive_avg_pool2d(_x(2, 3, 2, 1), (6, 7)),
    "pool-1d-module": lambda: nn.AdaptiveAvgPool1d(5)(_x(3, 5, 7)),
    "pool-3d-none": lambda: F.adaptive_avg_pool3d(_x(1, 2, 3, 4, 5), (2, None, 3)),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_each_rewrite_computes_what_torch_computes(call):
    expected = call()
    with PortableOps():
        got = call()
    pairs = zip(got, expected) if isinstance(expected, tuple) else [(got, expected)]
    for value, reference in pairs:
        assert value.dtype == reference.dtype and value.shape == reference.shape
        assert torch.allclose(value.double(), reference.double(), atol=1e-6)


class _PackedPositions(nn.Module):
    """transformers' causal LMs: sequence starts found by ``diff`` and counted by a boolean ``cumsum``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        starts = torch.diff(positions, prepend=positions[:, :1] - 1, dim=-1) != 1
        same = starts.cumsum(-1)
        mask = same[:, :, None] == same[:, None, :]
        h = self.proj(self.embed(ids))
        scores = (h @ h.transpose(1, 2)).masked_fill(~mask, -1e4).softmax(-1)
        return self.head((scores @ h).mean(1))


class _FoldedPatches(nn.Module):
    """MobileViT-V2: a map unfolded into patches, mixed, and folded back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.mix = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        patches = F.unfold(h, 2, stride=2)  # (N, 4 * 4, L)
        patches = self.mix(patches.reshape(x.shape[0], 4, 4, -1)).reshape(x.shape[0], 16, -1)
        return self.head(F.fold(patches, h.shape[-2:], 2, stride=2).mean((2, 3)))


class _HaloWindows(nn.Module):
    """timm's HaloNet: overlapping key/value windows of a padded map cut by two ``Tensor.unfold``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        windows = F.pad(torch.relu(self.conv(x)), [1, 1, 1, 1]).unfold(2, 4, 2).unfold(3, 4, 2)  # (N, C, 3, 3, 4, 4)
        return self.head(windows.amax((-1, -2)).mean((2, 3)))


class _DilatedSame(nn.Module):
    """braindecode's EEGNeX and dilated TCNs: ``padding="same"`` convolutions with a dilation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 4, padding="same", dilation=2)
        self.depthwise = nn.Conv2d(6, 6, (1, 3), padding="same", dilation=(1, 3), groups=6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.depthwise(torch.relu(self.conv(x)).unsqueeze(2)))
        return self.head(h.mean((2, 3)))


class _SplitAtLength(nn.Module):
    """transformers' Mamba: a sequence split at a point computed from its length."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        early, late = torch.tensor_split(h, [h.shape[-1] - 2], dim=2)
        return self.head(early.mean(-1) - late.mean(-1))


MODELS = {
    "packed-positions": (_PackedPositions, lambda: torch.randint(0, 20, (16, 6), generator=torch.Generator().manual_seed(0))),
    "folded-patches": (_FoldedPatches, lambda: _x(16, 1, 6, 6)),
    "split-at-length": (_SplitAtLength, lambda: _x(16, 2, 9)),
    "dilated-same": (_DilatedSame, lambda: _x(16, 2, 12)),
    "halo-windows": (_HaloWindows, lambda: _x(16, 1, 6, 6)),
    "pooled-up": (lambda: nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d((3, 3)), nn.Flatten(),
                                        nn.Linear(72, 5)), lambda: _x(16, 1, 4, 4)),  # AlexNet/VGG on a small input
}


@pytest.mark.parametrize("name", MODELS)
def test_a_model_using_them_exports_and_onnxruntime_agrees(name):
    make, inputs = MODELS[name]
    model, x = trained_like(make()), inputs()
    compressed = export(model, Plan.uniform(analyze(model, x), w_bits=6, a_bits=6), x, [x])
    proto = to_onnx(compressed, x[:4])  # also runs the graph at batch sizes 4 and 5
    with torch.no_grad():
        assert (onnx_logits(session(proto.SerializeToString(), optimize=False), x) - compressed(x)).abs().max() < 1e-5

"""Segmentation as MONAI writes it: per-pixel class ids, nested concat skips, affine InstanceNorm
followed by an in-place activation. Each broke a stage: the default metric and the curvature loss
read one class id per sample, Torch-Pruning's concat-size walk gave up on the nested skips, and
it lost an InstanceNorm whose output an in-place activation rewrote (so no unit could be pruned)."""

from __future__ import annotations

import torch
from torch import nn

import metacompress as mc
from metacompress.compressors import build_graph
from metacompress.compressors.instance_norm import PlainInstanceNorm
from metacompress.compressors.metrics import class_dim, distillation_loss, task_loss, top1


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """MONAI's Convolution + ADN: conv, affine InstanceNorm, in-place LeakyReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.1, inplace=True))


class Skip(nn.Module):
    """MONAI's SkipConnection: ``cat([x, submodule(x)], dim=1)``."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class NestedUNet(nn.Module):
    """MONAI's ``UNet`` layout at three levels: each level a down block, a nested skip, an up block."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        inner = nn.Sequential(block(16, 16, 2), nn.Upsample(scale_factor=2.0), block(16, 16))
        middle = nn.Sequential(block(8, 16, 2), Skip(inner), nn.Upsample(scale_factor=2.0), block(32, 8))
        self.net = nn.Sequential(block(1, 8), Skip(middle), block(16, 8), nn.Conv2d(8, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_class_ids_per_pixel_and_per_token_are_read_on_the_right_axis():
    maps, pixels = torch.randn(4, 3, 5, 6), torch.randint(0, 3, (4, 5, 6))
    tokens, ids = torch.randn(4, 7, 5), torch.randint(0, 5, (4, 7))
    assert class_dim(maps, pixels) == 1 and class_dim(tokens, ids) == -1 and class_dim(torch.randn(4, 3), ids[:, 0]) == -1
    assert class_dim(maps, pixels.float()) is None and class_dim(maps, torch.randint(0, 3, (4, 6))) is None
    assert top1(maps, maps.argmax(1)) == 1.0
    half = maps.argmax(1).clone()
    half[:2] = (half[:2] + 1) % 3
    assert top1(maps, half) == 0.5  # a fraction of pixels, not of samples
    assert torch.isclose(task_loss("logits", maps, pixels), nn.functional.cross_entropy(maps, pixels))
    assert float(distillation_loss("logits", maps, maps, class_axis=1)) < 1e-6
    assert float(distillation_loss("logits", maps, maps.flip(1), class_axis=1)) > 0.1


def test_instance_norm_is_rewritten_exactly_and_every_unit_below_the_head_prunes():
    torch.manual_seed(0)
    model = NestedUNet().eval()
    for norm in model.modules():
        if isinstance(norm, nn.InstanceNorm2d):
            nn.init.uniform_(norm.weight, 0.5, 1.5), nn.init.normal_(norm.bias)
    x = torch.randn(4, 1, 16, 16)
    norm = model.net[0][1]
    assert torch.allclose(PlainInstanceNorm(norm)(x.repeat(1, 8, 1, 1)), norm(x.repeat(1, 8, 1, 1)), atol=1e-5)
    spec = build_graph(model, x).spec
    assert [u.name for u in spec.units if not u.prunable] == ["net.3"], [(u.name, u.reason) for u in spec.units if not u.prunable]


def test_a_segmentation_net_compresses_with_pixel_labels_and_the_default_metric():
    torch.manual_seed(0)
    model = NestedUNet().eval()
    x = torch.randn(240, 1, 16, 16)
    with torch.no_grad():
        labels = model(x).argmax(1)  # the model's own per-pixel labels: its accuracy is 1.0
    data = mc.splits_from_arrays(x, labels)
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="bitops=0.3", planner=mc.agents.HawqPlanner(),
                         finetune_steps=20)
    summary = result.summary
    assert summary["within_budget"] and summary["metric"] == "top-1 accuracy"
    assert summary["test_accuracy_original"] == 1.0 and 0.3 < summary["test_accuracy_compressed"] <= 1.0
    assert summary["distillation"] == "KL over axis 1, T=2"
    assert result.model(x[:2]).shape == (2, 3, 16, 16)

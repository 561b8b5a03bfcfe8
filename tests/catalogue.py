"""A catalogue of real architecture patterns, written from their public designs, tiny.

Each model keeps one public design's structure (the ops and how they are wired) at a few
thousand parameters, so analysis, export and every planner run on it in about a second.
The defects of GitHub issue 14 were measured on full-size versions of these patterns:
hard-sigmoid SE gates, fused attention, a GRU between convs, token-mixing Linears,
grouped convs, ghost modules. v0.11 added designs users deploy to edge hardware: YOLOv8's
classifier (C2f's chunk and concat), RepVGG's training-time branches, PointNet's ``bmm``
transforms and HRNet's cross-resolution fusion. ``CATALOGUE`` maps a readable id to (builder, input shape).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + optional activation: the unit every CNN below repeats."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) with MobileNetV3's hard-sigmoid gate."""

    def __init__(self, channels: int, reduced: int, gate: type[nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x):
        scale = self.gate(self.expand(F.relu(self.reduce(x.mean(dim=(2, 3), keepdim=True)))))
        return x * scale


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck (Howard et al. 2019, Table 1): expand, depthwise, SE, project, hardswish."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = conv_bn(cin, hidden, act=nn.Hardswish)
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.Hardswish)
        self.se = SqueezeExcite(hidden, 4)
        self.project = conv_bn(hidden, cout, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2, act=nn.Hardswish)
        self.blocks = nn.Sequential(MobileNetV3Block(8, 16, 8, 1), MobileNetV3Block(8, 24, 12, 2))
        self.head = nn.Linear(12, classes)

    def forward(self, x):
        return self.head(F.hardswish(self.blocks(self.stem(x))).mean(dim=(2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's code, ``contiguous().view`` included: Torch-Pruning once divided by zero on it."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018, Fig. 3c/d): channel split or two branches, concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride > 1 else cin // 2
        if stride > 1:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, half))
        self.right = nn.Sequential(conv_bn(branch_in, half), conv_bn(half, half, 3, stride, groups=half, act=None), conv_bn(half, half))

    def forward(self, x):
        if self.stride == 1:
            keep, x = x.chunk(2, dim=1)
            out = torch.cat([keep, self.right(x)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3)
        self.stages = nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16, 1), ShuffleUnit(16, 16, 1))  # two chunk-shuffles in a row
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


class GhostModule(nn.Module):
    """Ghost module (Han et al. 2020, Fig. 2): a primary conv, a cheap depthwise conv of it, concatenated."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        primary = cout // 2
        act = nn.ReLU if relu else None
        self.primary = conv_bn(cin, primary, act=act)
        self.cheap = conv_bn(primary, primary, 3, groups=primary, act=act)

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """GhostNet bottleneck (stride 1): ghost expand, SE with hard-sigmoid in some blocks, ghost project, residual."""

    def __init__(self, channels: int, hidden: int, se: bool) -> None:
        super().__init__()
        self.ghost1 = GhostModule(channels, hidden)
        self.se = SqueezeExcite(hidden, 4) if se else nn.Identity()
        self.ghost2 = GhostModule(hidden, channels, relu=False)

    def forward(self, x):
        return x + self.ghost2(self.se(self.ghost1(x)))


class GhostNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)
        self.blocks = nn.Sequential(GhostBottleneck(8, 16, se=False), GhostBottleneck(8, 16, se=True))
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class GroupedBottleneck(nn.Module):
    """ResNeXt / RegNet-X bottleneck (Xie et al. 2017; Radosavovic et al. 2020): 1x1, grouped 3x3, 1x1, optional SE."""

    def __init__(self, cin: int, width: int, cout: int, group_width: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, width)
        self.conv2 = conv_bn(width, width, 3, stride, groups=width // group_width)
        self.se = SqueezeExcite(width, 4, gate=nn.Sigmoid) if se else nn.Identity()
        self.conv3 = conv_bn(width, cout, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv3(self.se(self.conv2(self.conv1(x)))) + self.shortcut(x))


class RegNetX(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)
        self.stage1 = GroupedBottleneck(8, 8, 8, group_width=4)
        self.stage2 = GroupedBottleneck(8, 16, 16, group_width=4, stride=2)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.stage2(self.stage1(self.stem(x))).mean(dim=(2, 3)))


class ResNeXtSE(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)
        self.block = GroupedBottleneck(8, 16, 16, group_width=4, se=True)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022, Fig. 4): 7x7 depthwise, channels-last LayerNorm, inverted MLP, layer scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        h = self.gamma * self.fc2(F.gelu(self.fc1(h)))
        return x + h.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.block = ConvNeXtBlock(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class FusedAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (the fused kernel)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MobileViTBlock(nn.Module):
    """MobileViT block (Mehta and Rastegari 2022, Fig. 1b): local conv, unfold, transformer, fold, fuse by concat."""

    def __init__(self, channels: int, dim: int, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.local = conv_bn(channels, channels, 3, act=nn.SiLU)
        self.to_tokens = nn.Conv2d(channels, dim, 1, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.attn = FusedAttention(dim, heads=2)
        self.from_tokens = conv_bn(dim, channels, act=nn.SiLU)
        self.fuse = conv_bn(2 * channels, channels, 3, act=nn.SiLU)

    def forward(self, x):
        batch, _, height, width = x.shape
        p = self.patch
        h = self.to_tokens(self.local(x))
        dim = h.shape[1]
        # (N, D, H, W) -> (N * p * p, H/p * W/p, D): one sequence per pixel position in a patch
        tokens = h.reshape(batch, dim, height // p, p, width // p, p).permute(0, 3, 5, 2, 4, 1).reshape(batch * p * p, -1, dim)
        tokens = tokens + self.attn(self.norm(tokens))
        h = tokens.reshape(batch, p, p, height // p, width // p, dim).permute(0, 5, 3, 1, 4, 2).reshape(batch, dim, height, width)
        return self.fuse(torch.cat([x, self.from_tokens(h)], dim=1))


class MobileViT(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2, act=nn.SiLU)
        self.block = MobileViTBlock(8, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


class DenseNet(nn.Module):
    """DenseNet (Huang et al. 2017): BN-ReLU-conv layers, each concatenated onto its input; a transition."""

    def __init__(self, classes: int = 4, growth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.dense = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(8 + i * growth), nn.ReLU(), nn.Conv2d(8 + i * growth, growth, 3, padding=1, bias=False)) for i in range(2)
        )
        self.transition = nn.Sequential(nn.BatchNorm2d(8 + 2 * growth), nn.ReLU(), nn.Conv2d(8 + 2 * growth, 8, 1, bias=False))
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return self.head(self.transition(x).mean(dim=(2, 3)))


class ConvGRU(nn.Module):
    """A 1-D conv front-end, a GRU over time, a Linear and a head (speech / sensor models)."""

    def __init__(self, cin: int = 4, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, 8, 3, padding=1)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h, _ = self.gru(F.relu(self.conv(x)).transpose(1, 2))  # (N, L, 8)
        return self.head(F.relu(self.fc(h[:, -1])))


class PermuteHead(nn.Module):
    """Conv features moved channels-last and flattened before the Linear head (a reshape, not a flatten)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 8, 3, 2)
        self.conv2 = conv_bn(8, 8, 3, 2)
        self.head = nn.Linear(8 * 2 * 2, classes)

    def forward(self, x):
        h = self.conv2(self.conv1(x)).permute(0, 2, 3, 1)  # (N, H, W, C)
        return self.head(h.reshape(h.shape[0], -1))


class MixerBlock(nn.Module):
    """MLP-Mixer block (Tolstikhin et al. 2021, Fig. 1): token mixing over the transposed token axis, then channel mixing."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_fc1 = nn.Linear(tokens, 2 * tokens)
        self.token_fc2 = nn.Linear(2 * tokens, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_fc1 = nn.Linear(dim, 2 * dim)
        self.channel_fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):  # (N, T, D)
        h = self.norm1(x).transpose(1, 2)  # (N, D, T)
        x = x + self.token_fc2(F.gelu(self.token_fc1(h))).transpose(1, 2)
        return x + self.channel_fc2(F.gelu(self.channel_fc1(self.norm2(x))))


class MLPMixer(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, 4)  # 8x8 image -> 2x2 = 4 tokens of width 8
        self.block = MixerBlock(4, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (N, 4, 8)
        return self.head(self.norm(self.block(tokens)).mean(dim=1))


class Conv1dNet(nn.Module):
    """A 1-D residual CNN over (N, C, L) signals."""

    def __init__(self, cin: int = 4, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(cin, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv1d(8, 8, 3, padding=1, bias=False), nn.BatchNorm1d(8))
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        h = self.stem(x)
        return self.head(F.relu(h + self.conv(h)).mean(dim=2))


class Tabular(nn.Module):
    """An MLP on (N, F) feature vectors with BatchNorm1d."""

    def __init__(self, features: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(F.relu(self.fc2(F.relu(self.bn(self.fc1(x))))))


class TupleOutput(nn.Module):
    """A CNN returning (logits, embedding), as detection and metric-learning models do."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 8, 3))
        self.embed = nn.Linear(8, 6)
        self.head = nn.Linear(6, classes)

    def forward(self, x):
        embedding = self.embed(self.features(x).mean(dim=(2, 3)))
        return self.head(F.relu(embedding)), embedding


class ViT(nn.Module):
    """torchvision's ViT (Dosovitskiy et al. 2021): conv patch embedding, class token, pre-norm
    encoder blocks on the built-in ``nn.MultiheadAttention``, the class token's head."""

    def __init__(self, classes: int = 4, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.ln_1, self.ln_2, self.ln = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return self.head(self.ln(x)[:, 0])


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015): conv blocks down, ``ConvTranspose2d`` up, skip concats; a pooled head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.enc1, self.enc2 = conv_bn(3, 8, 3), nn.Sequential(nn.MaxPool2d(2), conv_bn(8, 16, 3))
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = conv_bn(16, 8, 3)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        skip = self.enc1(x)
        return self.head(self.dec(torch.cat([skip, self.up(self.enc2(skip))], dim=1)).mean(dim=(2, 3)))


class R2Plus1D(nn.Module):
    """torchvision's R(2+1)D video block (Tran et al. 2018): each 3-D conv factored into a spatial
    (1, 3, 3) and a temporal (3, 1, 1) Conv3d with BatchNorm3d, a residual add, pooled over time and space."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(8), nn.ReLU())

        def factored(width: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(width, 12, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(12), nn.ReLU(),
                                 nn.Conv3d(12, width, (3, 1, 1), padding=(1, 0, 0), bias=False), nn.BatchNorm3d(width))

        self.block = factored(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.block(x)).mean(dim=(2, 3, 4)))


class Bottleneck(nn.Module):
    """YOLO's bottleneck: two 3x3 conv-BN-SiLU, added to its input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = conv_bn(channels, channels, 3, act=nn.SiLU), conv_bn(channels, channels, 3, act=nn.SiLU)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """ultralytics' YOLOv8 C2f: a 1x1 conv's output chunked in two, bottlenecks chained on the second
    half, every piece concatenated into a 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1) -> None:
        super().__init__()
        self.half = cout // 2
        self.cv1 = conv_bn(cin, 2 * self.half, act=nn.SiLU)
        self.m = nn.ModuleList(Bottleneck(self.half) for _ in range(n))
        self.cv2 = conv_bn((2 + n) * self.half, cout, act=nn.SiLU)

    def forward(self, x):
        pieces = list(self.cv1(x).chunk(2, 1))
        pieces.extend(m(pieces[-1]) for m in self.m)
        return self.cv2(torch.cat(pieces, 1))


class YOLOv8Cls(nn.Module):
    """YOLOv8's classification model: strided conv-BN-SiLU stages with C2f blocks, a 1x1 conv head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.SiLU), C2f(8, 8), conv_bn(8, 16, 3, 2, act=nn.SiLU), C2f(16, 16, 2))
        self.neck = conv_bn(16, 32, act=nn.SiLU)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.neck(self.body(x)).mean(dim=(2, 3)))


class RepVGGBlock(nn.Module):
    """RepVGG's training-time block (Ding et al. 2021): 3x3 conv-BN + 1x1 conv-BN + identity BN, summed."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dense, self.one = conv_bn(cin, cout, 3, stride, act=None), conv_bn(cin, cout, 1, stride, act=None)
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None

    def forward(self, x):
        out = self.dense(x) + self.one(x)
        return F.relu(out if self.identity is None else out + self.identity(x))


class RepVGG(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(RepVGGBlock(3, 8, 2), RepVGGBlock(8, 8), RepVGGBlock(8, 16, 2), RepVGGBlock(16, 16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


class TNet(nn.Module):
    """PointNet's alignment network: a shared MLP, max-pooled, regressing a k x k transform (identity added)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.shared = nn.Sequential(nn.Conv1d(k, 16, 1), nn.BatchNorm1d(16), nn.ReLU())
        self.regress = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, k * k))

    def forward(self, x):
        transform = self.regress(self.shared(x).max(dim=2).values).view(-1, self.k, self.k)
        return transform + torch.eye(self.k, device=x.device)


class PointNet(nn.Module):
    """PointNet's classifier (Qi et al. 2017): input and feature transforms applied by ``bmm``, a shared
    point-wise MLP (1x1 Conv1d), a max over the points."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.input_transform, self.feature_transform = TNet(3), TNet(8)
        self.mlp1 = nn.Sequential(nn.Conv1d(3, 8, 1), nn.BatchNorm1d(8), nn.ReLU())
        self.mlp2 = nn.Sequential(nn.Conv1d(8, 16, 1), nn.BatchNorm1d(16), nn.ReLU(), nn.Conv1d(16, 32, 1), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, x):  # (N, 3, points)
        x = self.mlp1(torch.bmm(self.input_transform(x), x))
        x = torch.bmm(self.feature_transform(x), x)
        return self.head(self.mlp2(x).max(dim=2).values)


class HRNetFuse(nn.Module):
    """HRNet's exchange unit (Sun et al. 2019): a high- and a low-resolution branch, each added to the
    other's resampled output (1x1 conv + nearest upsampling, strided 3x3 conv down)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3)
        self.high, self.to_low = conv_bn(8, 8, 3), conv_bn(8, 16, 3, 2)
        self.low = conv_bn(16, 16, 3)
        self.up, self.down = conv_bn(16, 8, act=None), conv_bn(8, 16, 3, 2, act=None)
        self.head = nn.Linear(8 + 16, classes)

    def forward(self, x):
        x = self.stem(x)
        high, low = self.high(x), self.low(self.to_low(x))
        high, low = F.relu(high + F.interpolate(self.up(low), size=high.shape[-2:], mode="nearest")), F.relu(low + self.down(high))
        return self.head(torch.cat([high.mean(dim=(2, 3)), low.mean(dim=(2, 3))], 1))


IMAGE = (3, 8, 8)
SIGNAL = (4, 16)
VIDEO = (3, 4, 8, 8)
POINTS = (3, 16)  # xyz of 16 points
CATALOGUE: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mobilenetv3": (MobileNetV3, IMAGE),
    "shufflenetv2": (ShuffleNetV2, IMAGE),
    "ghostnet": (GhostNet, IMAGE),
    "regnetx": (RegNetX, IMAGE),
    "resnext-se": (ResNeXtSE, IMAGE),
    "convnext": (ConvNeXt, IMAGE),
    "mobilevit": (MobileViT, IMAGE),
    "densenet": (DenseNet, IMAGE),
    "conv-gru": (ConvGRU, SIGNAL),
    "permute-head": (PermuteHead, IMAGE),
    "mlp-mixer": (MLPMixer, IMAGE),
    "conv1d": (Conv1dNet, SIGNAL),
    "tabular": (Tabular, (12,)),
    "tuple-output": (TupleOutput, IMAGE),
    "vit": (ViT, IMAGE),
    "unet": (UNet, IMAGE),
    "r2plus1d": (R2Plus1D, VIDEO),
    "yolov8-cls": (YOLOv8Cls, IMAGE),
    "repvgg": (RepVGG, IMAGE),
    "pointnet": (PointNet, POINTS),
    "hrnet-fuse": (HRNetFuse, IMAGE),
}


def build(model_id: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A catalogue model with non-trivial BatchNorm statistics, in eval mode, and its input shape."""
    builder, shape = CATALOGUE[model_id]
    torch.manual_seed(seed)
    model = builder()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model.eval(), shape

"""Model families of the zoo, written here so nothing depends on torchvision or timm.

Each family is a builder ``build(input_shape, num_classes, width, depth) -> nn.Module``
with two integer knobs (what they mean is in each family's ``summary``) and the input
kinds it fits (images and/or sequences; the fitting datasets follow from their shapes). The families cover the structures a compressor must handle: plain stacks, a
flatten before the classifier (channels coupled to ``H*W`` features), residual adds that
couple channels across blocks, 1x1 projection shortcuts, depthwise convs, and attention
whose heads are pruned whole.

Conventions every family follows, because the compressor relies on them:
    * the classifier is the attribute ``head`` (an ``nn.Linear``): it is frozen by name;
    * only Conv1d/Conv2d/Linear/BatchNorm/LayerNorm/ReLU/ReLU6/GELU/pooling/flatten
      modules, grouped convs only as depthwise, one activation module per use, and no
      in-place op on a tensor that feeds a residual add;
    * attention has separate ``q``, ``k``, ``v``, ``o`` Linears with ``head_dim`` fixed and
      the head count derived in ``forward`` from ``q.out_features``, so pruning whole
      heads needs no edit of the module.

Adding a family is one place: write its ``nn.Module`` and a builder, then add a
``Family`` to ``FAMILIES``. The CLI and the tests pick it up from there; its trained
models are lines in the zoo catalogue (``envs/_zoo_catalog.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from math import prod
from typing import Callable

import torch
from torch import nn

from metacompress.envs.zoo.datasets import DATASETS
from metacompress.errors import UnknownName, UnsupportedModel

Builder = Callable[[tuple[int, ...], int, int, int], nn.Module]


def _image_shape(input_shape: tuple[int, ...], family: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise UnsupportedModel(
            f"family {family!r} needs image input (C, H, W), got shape {input_shape}; "
            "use 'cnn1d', 'mlp' or 'transformer' for sequences"
        )
    return input_shape  # type: ignore[return-value]


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class MLP(nn.Module):
    """Flatten, ``depth`` x (Linear, BatchNorm1d, ReLU) of ``width`` units, then ``head``."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.BatchNorm1d(width), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN1d(nn.Module):
    """``depth`` x (Conv1d k=5, BatchNorm1d, ReLU) of ``width`` channels; each of the first
    three halves the length by max-pooling; flatten; ``head``."""

    def __init__(self, channels: int, length: int, num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            conv = nn.Conv1d(channels if i == 0 else width, width, 5, padding=2, bias=False)
            layers += [conv, nn.BatchNorm1d(width), nn.ReLU()]
            if i < 3 and length >= 2:
                layers.append(nn.MaxPool1d(2))
                length //= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(width * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VGG(nn.Module):
    """Three stages of ``depth`` x (Conv3x3, BN, ReLU) with ``width``, 2x and 4x channels,
    each ending in a 2x2 max-pool; flatten (no global pool); ``head``."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        cin, height, wide = input_shape
        layers: list[nn.Module] = []
        for stage in range(3):
            cout = width * 2**stage
            for _ in range(depth):
                layers += [*_conv_bn(cin, cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
            height, wide = height // 2, wide // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(cin * height * wide, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a residual add (He et al. 2016, CIFAR variant);
    a 1x1 conv + BN projects the shortcut when the stride or the channel count changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, stride=stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(cout, cout)
        project = stride != 1 or cin != cout
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, kernel=1, stride=stride)) if project else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv; three stages of ``depth`` basic blocks with ``width``, 2x, 4x channels
    (the last two start with stride 2); global average pool; ``head``. depth 1 is
    ResNet-8, depth 3 is ResNet-20."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], width), nn.ReLU())
        blocks, cin = [], width
        for stage in range(3):
            cout = width * 2**stage
            for i in range(depth):
                blocks.append(BasicBlock(cin, cout, stride=2 if stage and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018): 1x1 expand + BN + ReLU6, depthwise 3x3 +
    BN + ReLU6, 1x1 linear projection + BN; a residual add when stride 1 and cin == cout."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = nn.Sequential(*_conv_bn(cin, hidden, kernel=1), nn.ReLU6())
        self.depthwise = nn.Sequential(*_conv_bn(hidden, hidden, stride=stride, groups=hidden), nn.ReLU6())
        self.project = nn.Sequential(*_conv_bn(hidden, cout, kernel=1))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem conv + ReLU6; three stages of ``depth`` inverted residuals (expansion 4) with
    ``width``, 2x, 4x channels (the last two start with stride 2); 1x1 conv to 8x
    ``width``; global average pool; ``head``."""

    EXPANSION = 4

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], width), nn.ReLU6())
        blocks, cin = [], width
        for stage in range(3):
            cout = width * 2**stage
            for i in range(depth):
                blocks.append(InvertedResidual(cin, cout, stride=2 if stage and i == 0 else 1, expansion=self.EXPANSION))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(*_conv_bn(cin, 8 * width, kernel=1), nn.ReLU6())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.last(self.blocks(self.stem(x)))))

MAX_TOKENS = 49


def _patch_side(spatial: tuple[int, ...] | list[int]) -> int:
    """The smallest patch side >= 2 dividing every spatial side that leaves at most
    ``MAX_TOKENS`` tokens (8x8 -> 2, 14x14 -> 2, 16x16 -> 4, length 40 -> 2); 0 if none.

    Attention costs grow with the square of the token count, so this bounds the cost on
    two CPU cores while keeping patches as fine as that allows.
    """
    for patch in range(2, max(spatial) + 1):
        if all(side % patch == 0 for side in spatial) and prod(side // patch for side in spatial) <= MAX_TOKENS:
            return patch
    return 0


class Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v``, ``o`` projections.

    The head count is ``q.out_features // head_dim``, read in ``forward``: pruning whole
    heads (``head_dim`` output rows of q, k, v and the matching input columns of o) leaves
    a working module.
    """

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        heads = self.q.out_features // self.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:  # (N, T, H*D) -> (N, H, T, D)
            return t.reshape(batch, tokens, heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)  # (N, H, T, T)
        return self.o((weights @ v).transpose(1, 2).reshape(batch, tokens, heads * self.head_dim))


class FeedForward(nn.Module):
    """Transformer MLP: ``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, head_dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, head_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), FeedForward(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A small ViT (Dosovitskiy et al. 2021) without class token: conv patch embedding
    (see ``_patch_side``), learned positional embedding,
    ``depth`` pre-LN encoder blocks, final LayerNorm, mean over tokens, ``head``."""

    HEAD_DIM = 8
    MLP_RATIO = 2

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        channels, *spatial = input_shape
        patch = _patch_side(spatial)
        conv = nn.Conv2d if len(spatial) == 2 else nn.Conv1d
        self.patch_embed = conv(channels, width, patch, stride=patch)
        tokens = prod(side // patch for side in spatial)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(width, self.HEAD_DIM, self.MLP_RATIO) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, T, width)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def _build_mlp(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    return MLP(int(torch.Size(input_shape).numel()), num_classes, width, depth)


def _build_cnn1d(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    if len(input_shape) != 2:
        raise UnsupportedModel(
            f"family 'cnn1d' needs sequence input (C, L), got shape {input_shape}; use 'vgg' or 'resnet' for images"
        )
    return CNN1d(input_shape[0], input_shape[1], num_classes, width, depth)


def _build_vgg(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    shape = _image_shape(input_shape, "vgg")
    if min(shape[1:]) < 8:
        raise UnsupportedModel(f"family 'vgg' pools three times and needs images of at least 8x8, got {shape[1]}x{shape[2]}")
    return VGG(shape, num_classes, width, depth)


def _build_resnet(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    return ResNet(_image_shape(input_shape, "resnet"), num_classes, width, depth)


def _build_mobilenetv2(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    return MobileNetV2(_image_shape(input_shape, "mobilenetv2"), num_classes, width, depth)


def _build_transformer(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    if len(input_shape) not in (2, 3) or _patch_side(input_shape[1:]) == 0:
        raise UnsupportedModel(
            f"family 'transformer' needs (C, H, W) or (C, L) input cut into at most {MAX_TOKENS} patches "
            f"of side >= 2 dividing every side, got {input_shape}"
        )
    if width % Transformer.HEAD_DIM:
        raise UnsupportedModel(f"transformer width must be a multiple of {Transformer.HEAD_DIM} (the head dim), got {width}")
    return Transformer(input_shape, num_classes, width, depth)


INPUT_KINDS = {2: "sequence", 3: "image"}
"""Input kind by sample rank: ``(C, L)`` is a sequence, ``(C, H, W)`` an image."""


@dataclass(frozen=True)
class Family:
    """One architecture family: its builder, what its knobs mean, and the inputs it fits.

    Args:
        name: registry name, used in zoo ids (``resnet-w16-d2-mnist``).
        build: ``build(input_shape, num_classes, width, depth) -> nn.Module`` (untrained).
        inputs: the input kinds it takes, ``"image"`` and/or ``"sequence"``.
        summary: what ``width`` and ``depth`` mean for this family.
    """

    name: str
    build: Builder
    inputs: tuple[str, ...]
    summary: str

    @property
    def datasets(self) -> tuple[str, ...]:
        """The registered datasets it fits (derived, so a new dataset needs no edit here)."""
        return tuple(name for name, info in DATASETS.items() if INPUT_KINDS.get(len(info.input_shape)) in self.inputs)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("mlp", _build_mlp, ("image", "sequence"), "width: hidden units; depth: hidden layers"),
        Family("cnn1d", _build_cnn1d, ("sequence",), "width: channels of every conv; depth: conv layers"),
        Family("vgg", _build_vgg, ("image",), "width: channels of stage 1 (then 2x, 4x); depth: convs per stage"),
        Family("resnet", _build_resnet, ("image",), "width: channels of stage 1 (then 2x, 4x); depth: basic blocks per stage"),
        Family(
            "mobilenetv2",
            _build_mobilenetv2,
            ("image",),
            "width: channels of stage 1 (then 2x, 4x; expansion 4); depth: inverted residuals per stage",
        ),
        Family(
            "transformer",
            _build_transformer,
            ("image", "sequence"),
            "width: embedding dim (a multiple of 8; heads of 8 dims); depth: encoder blocks",
        ),
    )
}


def build_model(family: str, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    """Build an untrained model of ``family`` for inputs of ``input_shape``.

    Weights are drawn from torch's global RNG: seed it (or fork it) for a reproducible model.

    Args:
        family: a key of ``FAMILIES``.
        input_shape: one sample's shape without the batch dim, e.g. ``(1, 14, 14)``.
        num_classes: outputs of ``head``.
        width: the family's width knob (see its ``summary``), >= 1.
        depth: the family's depth knob (see its ``summary``), >= 1.

    Raises:
        UnknownName: if ``family`` is not registered.
        UnsupportedModel: if the knobs are not positive or the input shape does not fit.
    """
    if family not in FAMILIES:
        close = get_close_matches(family, FAMILIES, n=3) or sorted(FAMILIES)
        raise UnknownName(f"unknown model family {family!r}; did you mean {', '.join(close)}? Known: {', '.join(FAMILIES)}")
    if width < 1 or depth < 1:
        raise UnsupportedModel(f"width and depth must be >= 1, got width={width}, depth={depth}")
    return FAMILIES[family].build(tuple(input_shape), num_classes, width, depth)

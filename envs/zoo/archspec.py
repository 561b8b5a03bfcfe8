"""The grammar of generated networks: ``ArchSpec``, its ``BlockSpec``s, and ``build_arch``.

A generated network is a stem conv (or none: an MLP starts by flattening), a chain of
conv blocks, a pool (global average or flatten), a chain of MLP blocks and the
classifier ``head``. Every block kind is a real block of a published network, so the
agent meets the structures it will meet in practice (``BLOCK_KINDS`` says which).
Attention is deliberately absent: the held-out ``transformer`` family stays a kind of
block no training model contains, so the bench still measures transfer to it.

The networks keep the zoo's conventions (``families.py``): the classifier is ``head``,
one activation module per use, no in-place op, depthwise convs as ``groups == channels``.
Unlike the hand-written families they also hold grouped convs, sigmoid gates and
concatenations, which analysis may keep quantize-only.

``sampler.py`` draws specs from this grammar; this module only validates and builds them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from math import ceil

import torch
from torch import nn

from metacompress.errors import InvalidArch

GENERATED_FAMILY = "generated"
"""The zoo family name of every generated network."""

BLOCK_KINDS: dict[str, str] = {
    "conv": "conv k + BN + ReLU; stride 1 (plain) or 2 (strided, halves the resolution)",
    "dwsep": "depthwise conv k + BN + ReLU, pointwise 1x1 + BN + ReLU (MobileNetV1, Howard et al. 2017)",
    "inverted": "1x1 expand (x2-4) + BN + ReLU6, depthwise k + BN + ReLU6, 1x1 linear projection + BN, "
    "residual add when the shape is kept (MobileNetV2, Sandler et al. 2018)",
    "grouped": "grouped conv k (2 or 4 groups) + BN + ReLU (ResNeXt, Xie et al. 2017)",
    "se": "squeeze-excitation: x * sigmoid(1x1 up(ReLU(1x1 down(avg-pool x)))), width kept (Hu et al. 2018)",
    "residual": "two conv k + BN added to the input (a 1x1 conv + BN projects it when the shape changes), "
    "then ReLU (ResNet basic block, He et al. 2016)",
    "concat": "two conv + BN + ReLU branches, kernel k and 1x1, concatenated on channels (Inception-like)",
    "dilated": "sequences only: Conv1d k with dilation 2 or 4 + BN + ReLU (TCN/WaveNet-like)",
    "mlp": "Linear + BatchNorm1d or LayerNorm + ReLU, on the pooled features",
}
"""Every block kind the generator can emit, and what it builds. Attention is not one."""

INPUT_KINDS = ("image", "sequence")
POOLS = ("avg", "flatten")
NORMS = ("batch", "layer")
KERNELS = (1, 3, 5)
_STRIDED = ("conv", "dwsep", "inverted", "grouped", "residual")
_POINTWISE = ("se", "mlp")  # no spatial kernel
_SPATIAL = ("dwsep", "inverted", "dilated")  # a 1x1 depthwise or dilated conv would be degenerate


@dataclass(frozen=True)
class BlockSpec:
    """One block of a generated network.

    Args:
        kind: a key of ``BLOCK_KINDS``.
        width: output channels (conv kinds) or features (``mlp``), >= 4.
        kernel: 1, 3 or 5: the spatial kernel; 1 for ``se`` and ``mlp`` (they have
            none), 3 or 5 for the depthwise conv of ``dwsep`` and ``inverted`` and for ``dilated``.
        stride: 1, or 2 for the kinds that can downsample (``conv``, ``dwsep``,
            ``inverted``, ``grouped``, ``residual``).
        expansion: hidden-width multiplier of ``inverted`` (2-4); 1 elsewhere.
        groups: 2 or 4 for ``grouped`` (dividing both widths); 1 elsewhere.
        dilation: 2 or 4 for ``dilated``; 1 elsewhere.
        norm: ``"batch"``, or ``"layer"`` for an ``mlp`` block.
    """

    kind: str
    width: int
    kernel: int = 3
    stride: int = 1
    expansion: int = 1
    groups: int = 1
    dilation: int = 1
    norm: str = "batch"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise InvalidArch(f"invalid block {self}: " + "; ".join(problems) + ". Fix the spec or draw it with sample_arch")

    def problems(self) -> list[str]:
        """Every way this block breaks the grammar (empty if it is valid)."""
        found = []
        if self.kind not in BLOCK_KINDS:
            found.append(f"unknown kind {self.kind!r} (known: {', '.join(BLOCK_KINDS)})")
        if self.width < 4:
            found.append(f"width must be >= 4, got {self.width}")
        if self.kernel not in KERNELS:
            found.append(f"kernel must be one of {KERNELS}, got {self.kernel}")
        elif self.kind in _POINTWISE and self.kernel != 1:
            found.append(f"{self.kind!r} has no spatial kernel: kernel must be 1, got {self.kernel}")
        elif self.kind in _SPATIAL and self.kernel == 1:
            found.append(f"{self.kind!r} needs a spatial kernel of 3 or 5, got 1")
        if self.stride not in (1, 2) or (self.stride == 2 and self.kind not in _STRIDED):
            found.append(f"stride must be 1, or 2 for {', '.join(_STRIDED)}; got {self.stride} for {self.kind!r}")
        checks = (
            ("expansion", (2, 3, 4), "inverted"),
            ("groups", (2, 4), "grouped"),
            ("dilation", (2, 4), "dilated"),
        )
        for name, allowed, kind in checks:
            value = getattr(self, name)
            if (self.kind == kind and value not in allowed) or (self.kind != kind and value != 1):
                found.append(f"{name} must be in {allowed} for {kind!r} and 1 elsewhere, got {value}")
        if self.norm not in NORMS or (self.norm == "layer" and self.kind != "mlp"):
            found.append(f"norm must be 'batch', or 'layer' for an mlp block; got {self.norm!r}")
        if self.kind == "concat" and self.width % 2:
            found.append(f"a concat block splits its width in two branches: it must be even, got {self.width}")
        return found


@dataclass(frozen=True)
class ArchSpec:
    """A whole generated network; frozen, hashable and JSON round-tripping.

    Equal specs build the same architecture (the fields are the whole structure); to
    compare with a hand-written network, use ``layer_signature`` on both modules.

    Args:
        input_kind: ``"image"`` (``(C, H, W)`` input) or ``"sequence"`` (``(C, L)``).
        stem: the first conv block (kind ``conv``), or ``None`` for an MLP, which starts
            by flattening the input.
        blocks: the conv blocks, then the ``mlp`` blocks (at least 2 blocks in all).
        pool: how conv features become a vector: ``"avg"`` (global average) or
            ``"flatten"`` (keeps the positions: channels couple to ``H*W`` features).
    """

    input_kind: str
    stem: BlockSpec | None
    blocks: tuple[BlockSpec, ...]
    pool: str = "avg"

    def __post_init__(self) -> None:
        problems = []
        if self.input_kind not in INPUT_KINDS:
            problems.append(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.pool not in POOLS:
            problems.append(f"pool must be one of {POOLS}, got {self.pool!r}")
        if len(self.blocks) < 2:
            problems.append(f"need at least 2 blocks, got {len(self.blocks)}")
        if self.stem is not None and self.stem.kind != "conv":
            problems.append(f"the stem must be a 'conv' block, got {self.stem.kind!r}")
        kinds = [block.kind for block in self.blocks]
        first_mlp = kinds.index("mlp") if "mlp" in kinds else len(kinds)
        if any(kind != "mlp" for kind in kinds[first_mlp:]):
            problems.append(f"mlp blocks must come after every conv block, got {kinds}")
        if self.stem is None and (set(kinds) != {"mlp"} or self.pool != "flatten"):
            problems.append(f"without a stem the network is an MLP: every block 'mlp' and pool 'flatten', got {kinds}, {self.pool!r}")
        if self.input_kind == "image" and "dilated" in kinds:
            problems.append("'dilated' blocks are 1-D: use them for sequence input only")
        if problems:
            raise InvalidArch("invalid ArchSpec: " + "; ".join(problems) + ". Fix the spec or draw it with sample_arch")

    @property
    def conv_blocks(self) -> tuple[BlockSpec, ...]:
        return tuple(block for block in self.blocks if block.kind != "mlp")

    @property
    def mlp_blocks(self) -> tuple[BlockSpec, ...]:
        return tuple(block for block in self.blocks if block.kind == "mlp")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ArchSpec:
        """The spec of ``asdict(spec)`` or of parsed ``to_json`` output."""
        stem = BlockSpec(**data["stem"]) if data["stem"] is not None else None
        return cls(data["input_kind"], stem, tuple(BlockSpec(**b) for b in data["blocks"]), data["pool"])

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))


def _conv(dim: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Module:
    conv = nn.Conv2d if dim == 2 else nn.Conv1d
    return conv(cin, cout, kernel, stride, dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False)


def _norm(dim: int, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if dim == 2 else nn.BatchNorm1d(channels)


def _conv_bn_act(dim: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, dilation: int = 1,
                 act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers = [_conv(dim, cin, cout, kernel, stride, groups, dilation), _norm(dim, cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class InvertedResidual(nn.Module):
    """MobileNetV2 block of any kernel and dimension: expand, depthwise, linear project,
    plus the input when stride 1 and widths match (``families.InvertedResidual`` is the
    held-out family's fixed 2-D, 3x3 definition and stays as written)."""

    def __init__(self, dim: int, cin: int, block: BlockSpec) -> None:
        super().__init__()
        hidden = cin * block.expansion
        self.expand = _conv_bn_act(dim, cin, hidden, 1, act=nn.ReLU6)
        self.depthwise = _conv_bn_act(dim, hidden, hidden, block.kernel, block.stride, groups=hidden, act=nn.ReLU6)
        self.project = _conv_bn_act(dim, hidden, block.width, 1, act=None)
        self.residual = block.stride == 1 and cin == block.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """ResNet basic block: two conv k + BN and a shortcut (1x1 conv + BN if the shape changes)."""

    def __init__(self, dim: int, cin: int, block: BlockSpec) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_act(dim, cin, block.width, block.kernel, block.stride),
            *_conv_bn_act(dim, block.width, block.width, block.kernel, act=None),
        )
        project = block.stride != 1 or cin != block.width
        self.shortcut = _conv_bn_act(dim, cin, block.width, 1, block.stride, act=None) if project else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel gate: ``x * sigmoid(up(relu(down(mean over positions))))``, hidden = width / 4."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dim == 2 else nn.Conv1d
        self.pool = nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool1d(1)
        self.down, self.act = conv(channels, max(channels // 4, 4), 1), nn.ReLU()
        self.up, self.gate = conv(max(channels // 4, 4), channels, 1), nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.up(self.act(self.down(self.pool(x)))))


class Concat(nn.Module):
    """Two branches (conv k and conv 1x1, half the width each) concatenated on channels."""

    def __init__(self, dim: int, cin: int, block: BlockSpec) -> None:
        super().__init__()
        self.wide = _conv_bn_act(dim, cin, block.width // 2, block.kernel)
        self.point = _conv_bn_act(dim, cin, block.width // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.wide(x), self.point(x)], dim=1)


def _block(dim: int, cin: int, block: BlockSpec) -> nn.Module:
    """The module of one conv block taking ``cin`` channels."""
    kind, width, kernel, stride = block.kind, block.width, block.kernel, block.stride
    if kind in ("conv", "grouped", "dilated"):
        return _conv_bn_act(dim, cin, width, kernel, stride, block.groups, block.dilation)
    if kind == "dwsep":
        return nn.Sequential(*_conv_bn_act(dim, cin, cin, kernel, stride, groups=cin), *_conv_bn_act(dim, cin, width, 1))
    if kind == "inverted":
        return InvertedResidual(dim, cin, block)
    if kind == "residual":
        return Residual(dim, cin, block)
    if kind == "se":
        return SqueezeExcite(dim, cin)
    return Concat(dim, cin, block)


def block_out(cin: int, block: BlockSpec) -> int:
    """Output channels of ``block`` on ``cin`` input channels (``se`` keeps them)."""
    return cin if block.kind == "se" else block.width


def check_fits(spec: ArchSpec, input_shape: tuple[int, ...]) -> list[str]:
    """Every reason ``spec`` cannot take inputs of ``input_shape`` (empty if it can)."""
    kind = {2: "sequence", 3: "image"}.get(len(input_shape))
    if kind != spec.input_kind:
        return [f"the spec is for {spec.input_kind} input {'(C, H, W)' if spec.input_kind == 'image' else '(C, L)'}, got {input_shape}"]
    channels = input_shape[0]
    for block in ((spec.stem,) if spec.stem else ()) + spec.conv_blocks:
        if block.kind == "grouped" and (channels % block.groups or block.width % block.groups):
            return [f"a grouped block of {block.groups} groups needs widths divisible by it, got {channels} -> {block.width}"]
        channels = block_out(channels, block)
    return []


class GeneratedNet(nn.Module):
    """The network of an ``ArchSpec``: ``features`` (stem and conv blocks), ``pool``,
    ``mlp`` (the MLP blocks) and the classifier ``head``."""

    def __init__(self, spec: ArchSpec, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        dim = len(input_shape) - 1
        channels, *spatial = input_shape
        layers: list[nn.Module] = []
        for block in ((spec.stem,) if spec.stem else ()) + spec.conv_blocks:
            layers.append(_block(dim, channels, block))
            channels = block_out(channels, block)
            spatial = [ceil(side / block.stride) for side in spatial]  # padding k // 2 * dilation keeps ceil(L / s)
        self.features = nn.Sequential(*layers)
        if spec.stem is None or spec.pool == "flatten":
            self.pool = nn.Flatten()
            features = channels * int(torch.Size(spatial).numel())
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1) if dim == 2 else nn.AdaptiveAvgPool1d(1), nn.Flatten())
            features = channels
        mlp: list[nn.Module] = []
        for block in spec.mlp_blocks:
            norm = nn.BatchNorm1d(block.width) if block.norm == "batch" else nn.LayerNorm(block.width)
            mlp.append(nn.Sequential(nn.Linear(features, block.width), norm, nn.ReLU()))
            features = block.width
        self.mlp = nn.Sequential(*mlp)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.pool(self.features(x))))


def build_arch(spec: ArchSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the untrained network of ``spec`` for inputs of ``input_shape``.

    Weights are drawn from torch's global RNG, as ``families.build_model`` does: seed it
    (or fork it) for a reproducible model.

    Args:
        spec: the architecture, e.g. from ``sample_arch``.
        input_shape: one sample's shape without the batch dim, e.g. ``(1, 14, 14)``.
        num_classes: outputs of ``head``, >= 2.

    Raises:
        InvalidArch: if the input shape does not fit the spec (wrong rank, a grouped
            conv whose widths its groups do not divide) or ``num_classes`` < 2.
    """
    problems = check_fits(spec, tuple(input_shape)) + ([f"num_classes must be >= 2, got {num_classes}"] if num_classes < 2 else [])
    if problems:
        raise InvalidArch("cannot build this ArchSpec: " + "; ".join(problems))
    return GeneratedNet(spec, tuple(input_shape), num_classes)


def layer_signature(model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """The layers ``model`` runs, in call order: type, in/out channels, kernel, stride,
    groups and dilation of every conv, in/out features of every Linear, and each norm.

    Works on any network (hand-written or generated), so it is how a test shows that no
    generated network equals a held-out family's: equal signatures mean the same layers
    in the same order with the same shapes.
    """
    calls: list[tuple] = []

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            calls.append((type(module).__name__, module.in_channels, module.out_channels, module.kernel_size,
                          module.stride, module.groups, module.dilation))
        elif isinstance(module, nn.Linear):
            calls.append(("Linear", module.in_features, module.out_features))
        else:
            calls.append((type(module).__name__, tuple(output.shape[1:])))

    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_shape))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return tuple(calls)

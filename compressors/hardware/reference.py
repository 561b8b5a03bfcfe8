"""Hand-built layer shapes of reference networks, for calibration against published tables.

The public calibration figures were measured on these networks: HAQ's BISMO table and
APQ's BitFusion table on MobileNetV2, HAWQ-V3's T4 latencies on ResNet-18 (ImageNet,
224x224 input). Only the shapes matter here, so they are written down directly rather
than traced from a model, which keeps calibration free of torch and of ``analyze``.
"""

from __future__ import annotations

from metacompress.compressors.spec import LayerSpec


def make_layer(
    name: str,
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel: int = 1,
    stride: int = 1,
    size: int = 1,
    unit: int = 0,
    tokens: int = 1,
) -> LayerSpec:
    """One standalone layer's spec (square feature maps, 'same' padding).

    Args:
        name: a label.
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        in_channels: input channels (features for linear).
        out_channels: output channels.
        kernel: square kernel side (ignored for linear).
        stride: conv stride.
        size: input feature map side (conv) in pixels.
        unit: the unit index that prunes the outputs.
        tokens: positions a linear layer is applied at (1 for a flat vector).
    """
    if kind == "linear":
        return LayerSpec(name, "linear", in_channels, out_channels, (), 1, 1, tokens, tokens, True, unit,
                         in_units=(), in_fixed=in_channels)
    out_size = -(-size // stride)
    groups = in_channels if kind == "depthwise" else 1
    return LayerSpec(name, kind, in_channels, out_channels, (kernel, kernel), stride, groups, size * size,
                     out_size * out_size, False, unit, in_units=(), in_fixed=in_channels)


def mobilenetv2_layers() -> list[LayerSpec]:
    """The 52 conv layers and the classifier of MobileNetV2 (1.0x, 224x224), in order."""
    layers = [make_layer("stem", "conv", 3, 32, 3, 2, 224)]
    size, cin = 112, 32
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for block, (expand, cout, repeats, first_stride) in enumerate(settings):
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = cin * expand
            prefix = f"b{block}.{i}"
            if expand != 1:
                layers.append(make_layer(f"{prefix}.expand", "conv", cin, hidden, 1, 1, size))
            layers.append(make_layer(f"{prefix}.dw", "depthwise", hidden, hidden, 3, stride, size))
            size = -(-size // stride)
            layers.append(make_layer(f"{prefix}.project", "conv", hidden, cout, 1, 1, size))
            cin = cout
    layers.append(make_layer("head", "conv", cin, 1280, 1, 1, size))
    layers.append(make_layer("classifier", "linear", 1280, 1000))
    return layers


def resnet18_layers() -> list[LayerSpec]:
    """The 20 convs and the classifier of ResNet-18 (224x224), in order."""
    layers = [make_layer("stem", "conv", 3, 64, 7, 2, 224)]
    size, cin = 56, 64  # after the stride-2 max-pool
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            prefix = f"layer{stage + 1}.{block}"
            layers.append(make_layer(f"{prefix}.conv1", "conv", cin, cout, 3, stride, size))
            out_size = -(-size // stride)
            layers.append(make_layer(f"{prefix}.conv2", "conv", cout, cout, 3, 1, out_size))
            if stride != 1 or cin != cout:
                layers.append(make_layer(f"{prefix}.downsample", "conv", cin, cout, 1, stride, size))
            size, cin = out_size, cout
    layers.append(make_layer("fc", "linear", 512, 1000))
    return layers

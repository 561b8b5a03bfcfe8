"""Tiny models of every architecture the compressor must handle (seconds to analyse)."""

from __future__ import annotations

import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, d_in: int = 16, hidden: int = 24, classes: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.head(torch.relu(self.fc2(x)))


class TinyVGG(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(12 * 4 * 4, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = Block(width, width, 1)
        self.layer2 = Block(width, 2 * width, 2)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.project(self.dw(self.expand(x)))
        return x + out if self.use_res else out


class TinyMobileNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1))
        self.head = nn.Linear(12, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class Attention(nn.Module):
    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        batch, tokens, _ = x.shape
        heads = self.q.out_features // self.head_dim

        def split(t):
            return t.view(batch, tokens, heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)
        return self.o((attn @ v).transpose(1, 2).reshape(batch, tokens, heads * self.head_dim))


class TinyTransformer(nn.Module):
    def __init__(self, dim: int = 16, head_dim: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(16, dim)  # 4x4 patches of an 8x8 image
        self.pos = nn.Parameter(torch.randn(1, 4, dim) * 0.1)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, head_dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(x.shape[0], 4, 16)
        h = self.embed(patches) + self.pos
        h = h + self.attn(self.ln1(h))
        h = h + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(h))))
        return self.head(h.mean(dim=1))


class TwoHeads(nn.Module):
    """A detector-like model (MTCNN's RNet): box regression returned as is, a face score through a softmax.

    The score head runs first, so it is not the last layer run, and the output also carries an
    integer tensor (the argmax) that no loss may read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(8, 16)
        self.score = nn.Linear(16, 2)
        self.boxes = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        face = torch.softmax(self.score(h), dim=1).view(-1, 2)
        return self.boxes(h), face, face.argmax(dim=1)


def example_input(model: nn.Module, batch: int = 4, seed: int = 0) -> torch.Tensor:
    """A batch of the input shape each tiny model expects."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 16) if isinstance(model, TinyMLP) else (batch, 1, 8, 8)
    return torch.randn(shape, generator=generator)


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm non-trivial statistics so masking bugs cannot hide behind defaults."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model.eval()


TINY_MODELS = {
    "mlp": TinyMLP,
    "vgg": TinyVGG,
    "resnet": TinyResNet,
    "mobilenetv2": TinyMobileNet,
    "transformer": TinyTransformer,
}

"""Ops torch's ONNX exporter or onnxruntime refuse, traced as equivalent standard ops.

``to_onnx`` traces a model under ``PortableOps``, a function mode that computes each of these
calls from ops that export and run, with the same values (the same arithmetic, or sums of
exact products by 0 and 1), so the graph still computes what the PyTorch model computes. Each
rewrite answers a refusal met on public model code that the uncompressed model hits too:

- ``adaptive_avg_pool1d/2d/3d`` whose output size does not divide the input size (torchvision's
  AlexNet and VGG on 32-64 px inputs pool a 1x1 map "up" to 6x6 or 7x7): the exporter refuses
  it. At a traced size the pooling is a fixed linear map per spatial axis (output ``i``
  averages inputs ``floor(i n / m)`` to ``ceil((i + 1) n / m)``, PyTorch's definition): one
  MatMul per axis with a constant matrix.
- ``torch.diff`` (transformers' causal LMs find packed sequences with it on every forward):
  no ONNX mapping at any opset. It is the difference of two slices, ``n`` times.
- ``torch.tensor_split`` with split points (transformers' Mamba splits its scan inputs): the
  exporter writes a Tile whose repeats are 2-D, which onnxruntime refuses at run time. It is
  a list of slices.
- ``cumsum`` of booleans (the same LMs count sequence starts): torch sums them as int64, the
  exporter as booleans, which onnxruntime's CumSum refuses. The input is cast first.
- a dilated convolution with ``padding="same"`` (braindecode's EEGNeX, dilated TCNs): the
  exporter writes ONNX's ``auto_pad=SAME_UPPER``, which onnxruntime refuses with a dilation.
  It is the explicit zero padding torch computes (``d*(k-1)`` per axis, the larger half after),
  then the convolution without padding.
- ``Tensor.unfold`` (timm's HaloNet cuts overlapping key/value windows with two of them): the
  exporter needs the unfolded axis's size, which a traced graph (the batch and spatial dims
  are left free) does not give it. At a traced size the windows' positions are a constant:
  one Gather, then a reshape.
- ``F.fold`` (MobileViT-V2 folds patches back into a map): ``col2im`` exists from opset 18
  only, and the exporter fails translating it there. It is a transposed convolution per
  channel whose kernel places each of the ``k*k`` patch positions (one-hot weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

ADAPTIVE_AVG_POOLS = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)  # by spatial rank
DIFFS = (torch.diff, torch.Tensor.diff)
TENSOR_SPLITS = (torch.tensor_split, torch.Tensor.tensor_split)
CUMSUMS = (torch.cumsum, torch.Tensor.cumsum)
CONVS = (F.conv1d, F.conv2d, F.conv3d)  # by spatial rank
WINDOWS = (torch.Tensor.unfold,)


def _argument(args: tuple, kwargs: dict, index: int, name: str, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _pair(value, dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _along(x: torch.Tensor, dim: int, start: int | None, end: int | None) -> torch.Tensor:
    """``x[start:end]`` along ``dim`` (Python slice semantics: clamped, negative from the end)."""
    return x[(slice(None),) * (dim % x.dim()) + (slice(start, end),)]


def _pooled_sizes(x: torch.Tensor, output_size, dims: int) -> list[tuple[int, int]]:
    """(input size, output size) per spatial axis of an adaptive pooling (``None`` keeps the axis)."""
    sizes = [int(n) for n in x.shape[-dims:]]
    return [(n, n if m is None else int(m)) for n, m in zip(sizes, _pair(output_size, dims))]


def adaptive_avg_pool_as_matmuls(x: torch.Tensor, output_size, dims: int) -> torch.Tensor:
    """``F.adaptive_avg_poolNd(x, output_size)`` as one MatMul per spatial axis (any sizes)."""
    for axis, (n, m) in enumerate(_pooled_sizes(x, output_size, dims)):
        weights = torch.zeros(m, n, dtype=x.dtype, device=x.device)
        for i in range(m):
            start, end = (i * n) // m, -((-(i + 1) * n) // m)
            weights[i, start:end] = 1.0 / (end - start)
        axis_dim, last = x.dim() - dims + axis, x.dim() - 1  # non-negative: ONNX Transpose takes no negative perm
        x = torch.matmul(x.transpose(axis_dim, last), weights.T).transpose(axis_dim, last)
    return x


def diff_as_slices(x: torch.Tensor, n: int = 1, dim: int = -1, prepend: torch.Tensor | None = None,
                   append: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.diff``: ``x[1:] - x[:-1]`` along ``dim``, ``n`` times (``!=`` on booleans, as torch's)."""
    x = torch.cat([part for part in (prepend, x, append) if part is not None], dim=dim)
    for _ in range(n):
        later, earlier = _along(x, dim, 1, None), _along(x, dim, None, -1)
        x = later != earlier if x.dtype == torch.bool else later - earlier
    return x


def tensor_split_as_slices(x: torch.Tensor, sections, dim: int = 0) -> tuple[torch.Tensor, ...]:
    """``torch.tensor_split(x, sections, dim)``: ``sections`` parts (the first ``L % sections`` one
    longer) or the parts between the given split points."""
    if isinstance(sections, int):
        length = x.shape[dim]
        sizes = [length // sections + (1 if i < length % sections else 0) for i in range(sections)]
        points = [sum(sizes[: i + 1]) for i in range(sections - 1)]
    else:
        points = list(sections)
    bounds = [None, *points, None]
    return tuple(_along(x, dim, start, end) for start, end in zip(bounds[:-1], bounds[1:]))


def same_padding_as_pad(func, x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding="same", dilation=1,
                        groups: int = 1) -> torch.Tensor:
    """``func(x, weight, ..., padding="same", dilation)`` as ``F.pad`` then ``func`` without padding."""
    dims = CONVS.index(func) + 1
    pads: list[int] = []
    for size, d in reversed(list(zip(weight.shape[2:], _pair(dilation, dims)))):  # F.pad lists the last axis first
        total = d * (size - 1)
        pads += [total // 2, total - total // 2]
    return func(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)


def windows_as_gather(x: torch.Tensor, dim: int, size: int, step: int) -> torch.Tensor:
    """``x.unfold(dim, size, step)``: window ``i`` is ``x[i*step : i*step + size]`` along ``dim``, on a new last
    axis; one Gather of the windows' positions (a constant), then a reshape."""
    dim %= x.dim()
    count = (int(x.shape[dim]) - size) // step + 1
    positions = (torch.arange(count)[:, None] * step + torch.arange(size)).flatten().to(x.device)
    windows = x.index_select(dim, positions)
    return windows.reshape(*x.shape[:dim], count, size, *x.shape[dim + 1:]).movedim(dim + 1, -1)


def fold_as_transposed_conv(x: torch.Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> torch.Tensor:
    """``F.fold`` on a ``(N, C*kh*kw, L)`` or ``(C*kh*kw, L)`` input as a ``conv_transpose2d`` per channel."""
    (height, width), (kh, kw) = _pair(output_size, 2), _pair(kernel_size, 2)
    dilation, padding, stride = _pair(dilation, 2), _pair(padding, 2), _pair(stride, 2)
    unbatched = x.dim() == 2
    x = x.unsqueeze(0) if unbatched else x
    blocks = [(size + 2 * p - d * (k - 1) - 1) // s + 1
              for size, p, d, k, s in zip((height, width), padding, dilation, (kh, kw), stride)]
    # channel by channel (the batch and channels merged), so that the kernel is a constant the exporter can read
    one_hot = torch.eye(kh * kw, dtype=x.dtype, device=x.device).reshape(kh * kw, 1, kh, kw)
    out = F.conv_transpose2d(x.reshape(-1, kh * kw, *blocks), one_hot, stride=stride, dilation=dilation)
    (top, left), (padded_h, padded_w) = padding, (height + 2 * padding[0], width + 2 * padding[1])
    # pixels past the last block are covered by none (zeros, as fold leaves them); then the padding is cut
    out = F.pad(out, (0, padded_w - out.shape[-1], 0, padded_h - out.shape[-2]))[..., top : top + height, left : left + width]
    out = out.reshape(x.shape[0], -1, height, width)
    return out.squeeze(0) if unbatched else out


class PortableOps(TorchFunctionMode):
    """Computes the calls the module docstring lists from ops that export to ONNX and run in onnxruntime."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in ADAPTIVE_AVG_POOLS:
            x, size, dims = args[0], _argument(args, kwargs, 1, "output_size"), ADAPTIVE_AVG_POOLS.index(func) + 1
            if any(n % m for n, m in _pooled_sizes(x, size, dims)):  # where they divide, the op exports
                return adaptive_avg_pool_as_matmuls(x, size, dims)
        elif func in DIFFS:
            return diff_as_slices(args[0], _argument(args, kwargs, 1, "n", 1), _argument(args, kwargs, 2, "dim", -1),
                                  _argument(args, kwargs, 3, "prepend"), _argument(args, kwargs, 4, "append"))
        elif func in TENSOR_SPLITS:
            sections = _argument(args, kwargs, 1, "indices_or_sections", kwargs.get("sections", kwargs.get("indices")))
            # split points traced from a shape arrive as 0-d tensors
            if isinstance(sections, int) or (isinstance(sections, (list, tuple)) and all(
                    isinstance(p, int) or (isinstance(p, torch.Tensor) and p.dim() == 0) for p in sections)):
                return tensor_split_as_slices(args[0], sections, _argument(args, kwargs, 2, "dim", 0))
        elif func in CUMSUMS and not args[0].is_floating_point() and _argument(args, kwargs, 2, "dtype") is None:
            # torch sums integers and booleans as int64; the exporter keeps the input's type, which
            # onnxruntime's CumSum refuses for booleans
            return func(args[0].long(), *args[1:], **kwargs)
        elif func in CONVS and _argument(args, kwargs, 4, "padding") == "same" and any(
                d != 1 for d in _pair(_argument(args, kwargs, 5, "dilation", 1), CONVS.index(func) + 1)):
            return same_padding_as_pad(func, *args, **kwargs)
        elif func in WINDOWS and args[0].dim():
            return windows_as_gather(args[0], _argument(args, kwargs, 1, "dimension"), _argument(args, kwargs, 2, "size"),
                                     _argument(args, kwargs, 3, "step"))
        elif func is F.fold:
            return fold_as_transposed_conv(*args, **kwargs)
        return func(*args, **kwargs)

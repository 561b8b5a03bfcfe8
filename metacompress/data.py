"""The user's data as the three splits ``compress`` needs: from arrays, DataLoaders or Datasets, checked before any work.

``compress`` reads a split's inputs ``x`` and targets ``y`` as whole tensors (the proxy scores
a fixed subset, calibration and distillation draw seeded batches), so a DataLoader or a
Dataset is read once, in its own order, into tensors. A loader that shuffles draws its
order from its own generator: give it one (``generator=torch.Generator().manual_seed(0)``)
or ``shuffle=False`` so the same seed gives the same plan.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from metacompress.compressors.graph import eval_output
from metacompress.compressors.metrics import R2, TOP1, Metric, class_dim, is_class_ids, logits
from metacompress.envs.zoo.datasets import DatasetSplits, Split
from metacompress.errors import InvalidData

log = logging.getLogger(__name__)

SPLITS = ("train", "search", "test")
MIN_SPLIT_SAMPLES = {"train": 8, "search": 20, "test": 10}
"""Fewest samples per split: the search split's accuracy steps in 1/N, so fewer than 20 samples
cannot tell plans 5 points apart; an empty split scores every plan alike."""


def as_inputs(x) -> torch.Tensor:
    """Inputs as a tensor the model can read: integer ids (token ids for an ``nn.Embedding``) stay
    ``long``, everything else becomes float32; casting ids to float would break every embedding."""
    x = torch.as_tensor(x)
    return x.to(torch.long) if not x.is_floating_point() and x.dtype != torch.bool else x.to(torch.float32)


def splits_from_arrays(x, y, search_fraction: float = 0.25, test_fraction: float = 0.25, seed: int = 0) -> DatasetSplits:
    """Split arrays into the train / search / test splits ``compress`` needs (seeded).

    Class-id targets are stratified, so every split sees every class. Targets that are not
    class ids (a regression value, a vector), or classes too rare to stratify (a class with
    fewer than 2 samples in some cut), get a seeded unstratified split instead, logged as a
    warning for rare classes.

    Args:
        x: inputs, (N, ...) array or tensor (float32; integer token ids stay long).
        y: targets, (N, ...): integer class ids, or any tensor a user metric reads
            (floating targets stay float32).
        search_fraction / test_fraction: shares of the samples for the search and test splits.
        seed: fixes the split.
    """
    from sklearn.model_selection import train_test_split

    x = as_inputs(x)
    y = torch.as_tensor(y)
    y = y.to(torch.float32) if y.is_floating_point() else y.to(torch.long)
    if len(x) != len(y):
        raise InvalidData(f"x has {len(x)} samples but y has {len(y)}; pass one target per input")
    index = torch.arange(len(y)).numpy()
    test_share = search_fraction / (1 - test_fraction)
    try:
        if not is_class_ids(y):
            raise ValueError("targets are not class ids")
        labels = y.numpy()
        rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
        train, search = train_test_split(rest, test_size=test_share, random_state=seed, stratify=labels[rest])
        stratified = True
    except ValueError as exc:
        (log.warning if is_class_ids(y) else log.info)("splitting without stratification (seed %d): %s", seed, exc)
        rest, test = train_test_split(index, test_size=test_fraction, random_state=seed)
        train, search = train_test_split(rest, test_size=test_share, random_state=seed)
        stratified = False
    pick = lambda i: Split(x[torch.as_tensor(i)], y[torch.as_tensor(i)])  # noqa: E731
    classes = int(y.max()) + 1 if is_class_ids(y) and len(y) else 0
    name = "user" if stratified else "user-unstratified"
    return DatasetSplits(name, tuple(x.shape[1:]), classes, pick(train), pick(search), pick(test), seed)


def _is_array_pair(split) -> bool:
    """``(x, y)``: two tensors or numpy arrays, the form most training code holds its data in."""
    return (isinstance(split, (tuple, list)) and len(split) == 2
            and all(isinstance(a, (torch.Tensor, np.ndarray)) and a.ndim >= 1 for a in split))


def as_split(split, name: str) -> Split:
    """One split as tensors: anything with ``.x``/``.y``, an ``(x, y)`` pair of arrays, a DataLoader, or a Dataset of (input, target) pairs.

    Raises:
        InvalidData: the split is none of these, or its items are not (input, target) pairs.
    """
    from torch.utils.data import DataLoader, Dataset

    if hasattr(split, "x") and hasattr(split, "y"):
        return split
    if _is_array_pair(split):
        x, y = split
        if len(x) != len(y):
            raise InvalidData(f"the {name} split is an (x, y) pair with {len(x)} inputs and {len(y)} targets; pass one target per input")
        return Split(as_inputs(x), torch.as_tensor(y))
    if isinstance(split, DataLoader):
        pairs = list(split)
        join = torch.cat
    elif isinstance(split, Dataset) or (hasattr(split, "__getitem__") and hasattr(split, "__len__") and not isinstance(split, (str, bytes))):
        pairs = [split[i] for i in range(len(split))]
        join = torch.stack
    else:
        raise InvalidData(
            f"the {name} split is a {type(split).__name__}; pass an object with .x and .y tensors, an (x, y) pair of "
            "arrays, a torch.utils.data.DataLoader or a Dataset of (input, target) pairs"
        )
    if not pairs or not all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in pairs):
        raise InvalidData(f"the {name} split yields {type(pairs[0]).__name__ if pairs else 'nothing'}; each item must be an (input, target) pair")
    try:
        x = as_inputs(join([torch.as_tensor(p[0]) for p in pairs]))
        y = join([torch.as_tensor(p[1]) for p in pairs])
    except RuntimeError as exc:
        raise InvalidData(f"the {name} split's items do not stack into tensors ({exc}); every input must have one shape") from exc
    return Split(x, y)


class UserSplits:
    """The three splits of the user's data as tensors (``compress`` reads only ``.train``, ``.search``, ``.test``)."""

    def __init__(self, train: Split, search: Split, test: Split) -> None:
        self.train, self.search, self.test = train, search, test


def as_splits(data) -> UserSplits:
    """``data``'s three splits as tensors: ``data`` has ``.train``/``.search``/``.test`` or is a mapping with those keys.

    Each split may be tensors (``.x``/``.y``), an ``(x, y)`` pair, a DataLoader or a Dataset (see ``as_split``).
    """
    get = data.get if isinstance(data, Mapping) else lambda key: getattr(data, key, None)
    missing = [name for name in SPLITS if get(name) is None]
    if missing:
        raise InvalidData(
            f"data has no {', '.join(missing)} split; pass an object or dict with train, search and test splits "
            "(tensors with .x/.y, (x, y) pairs, DataLoaders or Datasets), e.g. metacompress.splits_from_arrays(x, y)"
        )
    if all(hasattr(get(name), "x") and hasattr(get(name), "y") for name in SPLITS) and not isinstance(data, Mapping):
        return data
    return UserSplits(*(as_split(get(name), name) for name in SPLITS))


def move_splits(data, device: torch.device) -> UserSplits:
    """The splits with their tensors on ``device`` (the same object when they are already there)."""
    if all(getattr(data, name).x.device == device and getattr(data, name).y.device == device for name in SPLITS):
        return data
    return UserSplits(*(Split(getattr(data, n).x.to(device), getattr(data, n).y.to(device)) for n in SPLITS))


def _class_id_problems(name: str, y: torch.Tensor, outputs: torch.Tensor | None) -> list[str]:
    """Why ``y`` cannot be top-1's class ids for ``outputs`` (the model's scores of one sample, None if it failed)."""
    axis = class_dim(outputs, y) if outputs is not None else (-1 if is_class_ids(y) else None)
    if axis is None:
        per_sample = "" if outputs is None else f" (the outputs are {tuple(outputs.shape[1:])} per sample)"
        return [f"{name}.y is {y.dtype} of shape {tuple(y.shape)}, but top-1 accuracy needs integer class ids, one per sample or "
                f"one per position of the output without its class axis{per_sample}; pass metric=fn for other targets"]
    classes = None if outputs is None else outputs.shape[axis]
    if classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        return [f"{name}.y holds labels {int(y.min())}..{int(y.max())}, but the model outputs {classes} classes (0..{classes - 1})"]
    return []


def _value_problems(name: str, y: torch.Tensor, outputs: torch.Tensor | None) -> list[str]:
    """Why ``y`` cannot be compared value by value with ``outputs`` (R2), empty if it can."""
    if outputs is None or y.numel() // max(len(y), 1) == outputs.numel() // max(len(outputs), 1):
        return []
    return [f"{name}.y has {tuple(y.shape[1:])} values per sample, but the outputs have {tuple(outputs.shape[1:])}: R2 compares "
            "them value by value; pass targets shaped like the outputs, or metric=fn for other targets"]


def check_data(model: nn.Module, example_input: torch.Tensor, data, metric: Metric = TOP1) -> None:
    """Every split is usable before any work: shapes, finite inputs, enough samples, targets the metric can read.

    An empty search split would score every plan 0.0 (the planner would choose blind), and
    labels outside the model's outputs would report a wrong accuracy without any error.

    Args:
        metric: top-1 needs class ids the model can output, R2 targets shaped like the outputs;
            a user metric reads any target tensor (one per input).

    Raises:
        InvalidData: every problem found, in one message.
    """
    problems = []
    try:
        outputs = logits(eval_output(model, example_input[:1]))
    except Exception:  # noqa: BLE001  (a model that rejects its example input is reported by analyze, with the shape)
        outputs = None
    for name in SPLITS:
        split = getattr(data, name)
        if len(split.x) < MIN_SPLIT_SAMPLES[name]:
            problems.append(f"the {name} split has {len(split.x)} samples, at least {MIN_SPLIT_SAMPLES[name]} are needed")
        elif tuple(split.x.shape[1:]) != tuple(example_input.shape[1:]):
            problems.append(f"{name}.x samples have shape {tuple(split.x.shape[1:])}, the example input {tuple(example_input.shape[1:])}")
        elif not torch.isfinite(split.x).all():
            problems.append(f"{name}.x holds NaN or inf")
        if len(split.x) != len(split.y):
            problems.append(f"{name} has {len(split.x)} inputs but {len(split.y)} labels")
        elif metric is TOP1:
            problems.extend(_class_id_problems(name, split.y, outputs))
        elif metric is R2:
            problems.extend(_value_problems(name, split.y, outputs))
    if problems:
        raise InvalidData("cannot use this data: " + "; ".join(problems) + ". Build it with metacompress.splits_from_arrays(x, y).")

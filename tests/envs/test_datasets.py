"""Datasets: shapes, sizes, normalisation, seeded determinism and disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metacompress as mc
from metacompress.envs.zoo.shapes import CLASSES, make_shapes
from metacompress.envs.zoo.datasets import ATTRIBUTION, DATASETS, _make_mnist1d, _split_indices, load_dataset
from metacompress.errors import UnknownName


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_splits_have_documented_shapes_sizes_and_no_shared_sample(name):
    info, data = DATASETS[name], load_dataset(name)
    assert (data.input_shape, data.num_classes) == (info.input_shape, info.num_classes)
    assert (len(data.search), len(data.test)) == (info.search_size, info.test_size)
    for split in (data.train, data.search, data.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == info.input_shape
        assert sorted(split.y.unique().tolist()) == list(range(info.num_classes))
    # every raw sample is distinct, so a shared row would mean a sample in two splits
    train, search, test = _rows(data.train.x), _rows(data.search.x), _rows(data.test.x)
    assert len(train) == len(data.train) and not (train & search or train & test or search & test)
    # normalised per channel with the train split's statistics
    channel_first = data.train.x.transpose(0, 1).reshape(info.input_shape[0], -1)
    assert torch.allclose(channel_first.mean(dim=1), torch.zeros(info.input_shape[0]), atol=1e-4)
    assert torch.allclose(channel_first.std(dim=1), torch.ones(info.input_shape[0]), atol=1e-3)


def test_search_and_test_hold_at_least_1000_where_the_data_allows():
    assert DATASETS["digits"].search_size == DATASETS["digits"].test_size == 450  # 1,797 samples in all
    for name in ("mnist1d", "mnist", "shapes"):
        assert DATASETS[name].search_size >= 1000 and DATASETS[name].test_size >= 1000


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_same_seed_bit_identical_other_seed_other_split(name):
    first, again = load_dataset.__wrapped__(name, 0), load_dataset.__wrapped__(name, 0)
    for a, b in zip((first.train, first.search, first.test), (again.train, again.search, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = load_dataset.__wrapped__(name, 1)
    assert not torch.equal(first.test.x, other.test.x)
    assert load_dataset(name, 0) is load_dataset(name, 0)  # cached in-process


def test_split_indices_are_disjoint_cover_everything_stratified_and_shuffled():
    y = np.repeat(np.arange(10), 100)
    train, search, test = _split_indices(y, search_size=200, test_size=300, seed=7)
    assert (len(train), len(search), len(test)) == (500, 200, 300)
    assert sorted(np.concatenate([train, search, test]).tolist()) == list(range(1000))
    assert np.bincount(y[test]).tolist() == [30] * 10 and np.bincount(y[search]).tolist() == [20] * 10
    assert len(set(y[test[:20]].tolist())) > 3  # a prefix is a random sample, not one class


@pytest.mark.parametrize("make", [make_shapes, _make_mnist1d], ids=["shapes", "mnist1d"])
def test_procedural_data_is_seeded_and_leaves_global_rngs_alone(make):
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    x0, y0 = make(3, num_samples=200)
    assert np.array_equal(np.random.get_state()[1], state)
    x1, y1 = make(3, num_samples=200)
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    x2, _ = make(4, num_samples=200)
    assert not np.array_equal(x0, x2)
    assert np.bincount(y0).tolist() == [20] * 10


def test_shapes_images_are_balanced_colour_and_not_trivial():
    x, y = make_shapes(0, num_samples=1000)
    assert x.shape == (1000, 3, 16, 16) and len(CLASSES) == 10
    # class is not readable from the mean colour: per-class mean intensities overlap
    means = np.array([x[y == c].mean() for c in range(10)])
    assert means.std() < 0.05


def test_unknown_dataset_names_close_matches():
    with pytest.raises(UnknownName, match="did you mean mnist"):
        load_dataset("mnsit")


def test_attribution_covers_every_dataset():
    assert set(ATTRIBUTION) == set(DATASETS)
    assert all(a["source"] and a["licence"] for a in ATTRIBUTION.values())
    assert "CC BY-SA 3.0" in ATTRIBUTION["mnist"]["licence"] and "Apache-2.0" in ATTRIBUTION["mnist1d"]["licence"]


def test_splits_print_their_shapes_not_their_values():
    data = mc.splits_from_arrays(torch.randn(600, 3, 32, 32), torch.randint(0, 10, (600,)))
    text = repr(data)
    assert "train=Split(x=float32[300, 3, 32, 32], y=int64[300])" in text and len(text) < 300

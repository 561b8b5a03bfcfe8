"""The zoo's catalogue: which models exist, how each is trained, and the accuracy it must reach.

Adding a model is one line in ``ZOO`` (a new family or dataset first goes into
``families.FAMILIES`` or ``datasets.DATASETS``). Ids read
``<family>-w<width>-d<depth>-<dataset>``, with ``-s<seed>`` appended for seeds other
than 0, e.g. ``resnet-w16-d2-mnist`` and ``resnet-w16-d2-mnist-s1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from difflib import get_close_matches

from metacompress.envs.zoo.datasets import DATASETS
from metacompress.envs.zoo.families import FAMILIES
from metacompress.errors import UnknownName, ZooError

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SEED_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>\d+)$")


@dataclass(frozen=True)
class ZooEntry:
    """How to make one zoo model, and the test accuracy it must reach.

    Args:
        id: unique name, also the cache file stem (lower case, digits, ``.``, ``_``, ``-``).
        family: a key of ``FAMILIES``.
        dataset: a key of ``DATASETS`` that the family fits.
        width: the family's width knob, >= 1.
        depth: the family's depth knob, >= 1.
        epochs: passes over the training split, >= 1.
        seed: draws the initial weights, the batch order and the data split, >= 0.
        batch_size: samples per training step, >= 2.
        lr: peak learning rate (AdamW, one-cycle cosine schedule), > 0.
        weight_decay: AdamW decoupled weight decay, >= 0.
        max_train_samples: train on a seeded random subset of this size (tests use it to
            stay fast); ``None`` for the whole train split.
        min_test_accuracy: floor on test accuracy in [0, 1]: building fails below it, so
            every zoo model is good enough for compression to have something to lose.
    """

    id: str
    family: str
    dataset: str
    width: int
    depth: int
    epochs: int
    seed: int = 0
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_train_samples: int | None = None
    min_test_accuracy: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not _ID.match(self.id):
            problems.append("the id may hold only lower-case letters, digits, '.', '_' and '-'")
        if self.family not in FAMILIES:
            problems.append(f"unknown family {self.family!r} (known: {', '.join(FAMILIES)})")
        if self.dataset not in DATASETS:
            problems.append(f"unknown dataset {self.dataset!r} (known: {', '.join(DATASETS)})")
        elif self.family in FAMILIES and self.dataset not in FAMILIES[self.family].datasets:
            problems.append(f"family {self.family!r} fits {', '.join(FAMILIES[self.family].datasets)}, not {self.dataset!r}")
        for name in ("width", "depth", "epochs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2 or self.seed < 0 or self.lr <= 0 or self.weight_decay < 0:
            problems.append(
                "need batch_size >= 2, seed >= 0, lr > 0, weight_decay >= 0; "
                f"got {self.batch_size}, {self.seed}, {self.lr}, {self.weight_decay}"
            )
        if self.max_train_samples is not None and self.max_train_samples < 2:
            problems.append(f"max_train_samples must be None or >= 2, got {self.max_train_samples}")
        if not 0.0 <= self.min_test_accuracy <= 1.0:
            problems.append(f"min_test_accuracy is a fraction in [0, 1], got {self.min_test_accuracy}")
        if problems:
            raise ZooError(f"invalid zoo entry {self.id!r}: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return DATASETS[self.dataset].input_shape

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes


def entry_id(family: str, width: int, depth: int, dataset: str, seed: int = 0) -> str:
    """The zoo's id convention: ``resnet-w16-d2-mnist``, plus ``-s<seed>`` if seed != 0."""
    return f"{family}-w{width}-d{depth}-{dataset}" + (f"-s{seed}" if seed else "")


def reseed(entry: ZooEntry, seed: int) -> ZooEntry:
    """The same recipe with another seed (new weights, batch order and data split) and id."""
    return replace(entry, seed=seed, id=entry_id(entry.family, entry.width, entry.depth, entry.dataset, seed))


# Test-accuracy floors per (family, dataset): the lowest accuracy the recipes below
# reached on that pair, minus 4 points, rounded down to 0.05 (chance is 0.10 everywhere).
# build_zoo fails a model that misses its floor, so a recipe change cannot silently
# leave compression nothing to lose.
ACCURACY_FLOORS: dict[tuple[str, str], float] = {
    ("mlp", "digits"): 0.90,
    ("mlp", "mnist1d"): 0.70,
    ("mlp", "mnist"): 0.85,
    ("mlp", "shapes"): 0.50,
    ("cnn1d", "mnist1d"): 0.90,
    ("vgg", "digits"): 0.90,
    ("vgg", "mnist"): 0.90,
    ("vgg", "shapes"): 0.75,
    ("resnet", "digits"): 0.90,
    ("resnet", "mnist"): 0.90,
    ("resnet", "shapes"): 0.85,
    ("mobilenetv2", "digits"): 0.90,
    ("mobilenetv2", "mnist"): 0.85,
    ("mobilenetv2", "shapes"): 0.80,
    ("transformer", "digits"): 0.85,
    ("transformer", "mnist1d"): 0.80,
    ("transformer", "mnist"): 0.85,
    ("transformer", "shapes"): 0.60,
}

# Per-family training recipe; the transformer needs a higher peak rate and more decay.
_RECIPES: dict[str, dict[str, float]] = {"transformer": {"lr": 1e-2, "weight_decay": 0.05}}


def _entry(family: str, dataset: str, width: int, depth: int, epochs: int) -> ZooEntry:
    return ZooEntry(
        id=entry_id(family, width, depth, dataset),
        family=family,
        dataset=dataset,
        width=width,
        depth=depth,
        epochs=epochs,
        min_test_accuracy=ACCURACY_FLOORS[family, dataset],
        **_RECIPES.get(family, {}),
    )


# (family, dataset, width, depth, epochs)
ZOO: tuple[ZooEntry, ...] = tuple(
    _entry(*row)
    for row in (
        ("mlp", "digits", 64, 1, 30),
        ("mlp", "digits", 128, 2, 30),
        ("mlp", "mnist1d", 128, 2, 20),
        ("mlp", "mnist1d", 256, 3, 20),
        ("mlp", "mnist", 128, 1, 20),
        ("mlp", "mnist", 256, 2, 20),
        ("mlp", "shapes", 256, 2, 10),
        ("cnn1d", "mnist1d", 16, 2, 15),
        ("cnn1d", "mnist1d", 32, 3, 15),
        ("cnn1d", "mnist1d", 64, 3, 15),
        ("cnn1d", "mnist1d", 32, 4, 15),
        ("vgg", "digits", 8, 1, 30),
        ("vgg", "digits", 16, 1, 30),
        ("vgg", "mnist", 8, 1, 15),
        ("vgg", "mnist", 16, 1, 15),
        ("vgg", "mnist", 16, 2, 15),
        ("vgg", "shapes", 16, 1, 8),
        ("vgg", "shapes", 16, 2, 8),
        ("vgg", "shapes", 32, 1, 8),
        ("resnet", "digits", 8, 1, 30),
        ("resnet", "digits", 16, 1, 30),
        ("resnet", "mnist", 8, 1, 15),
        ("resnet", "mnist", 16, 1, 15),
        ("resnet", "mnist", 16, 2, 15),
        ("resnet", "shapes", 16, 1, 8),
        ("resnet", "shapes", 16, 2, 8),
        ("resnet", "shapes", 32, 1, 8),
        ("mobilenetv2", "digits", 8, 1, 30),
        ("mobilenetv2", "digits", 16, 1, 30),
        ("mobilenetv2", "mnist", 8, 1, 15),
        ("mobilenetv2", "mnist", 16, 1, 15),
        ("mobilenetv2", "mnist", 16, 2, 15),
        ("mobilenetv2", "shapes", 16, 1, 8),
        ("mobilenetv2", "shapes", 16, 2, 8),
        ("mobilenetv2", "shapes", 24, 1, 8),
        ("transformer", "digits", 32, 1, 60),
        ("transformer", "digits", 32, 2, 60),
        ("transformer", "mnist1d", 32, 2, 20),
        ("transformer", "mnist", 32, 2, 20),
        ("transformer", "mnist", 64, 2, 20),
        ("transformer", "shapes", 32, 2, 30),
        ("transformer", "shapes", 64, 2, 20),
    )
)

ZOO_BY_ID: dict[str, ZooEntry] = {entry.id: entry for entry in ZOO}

QUICK: tuple[ZooEntry, ...] = tuple(
    ZOO_BY_ID[i]
    for i in (
        "mlp-w64-d1-digits",
        "cnn1d-w16-d2-mnist1d",
        "vgg-w8-d1-digits",
        "resnet-w8-d1-digits",
        "mobilenetv2-w8-d1-digits",
        "transformer-w32-d1-digits",
    )
)
"""One small model per family (mostly on digits): trains in seconds, for demos and tests."""


def get_entry(model_id: str) -> ZooEntry:
    """The zoo entry named ``model_id``; a ``-s<seed>`` suffix selects another seed.

    Raises:
        UnknownName: if no entry has that id; the message lists the closest ids.
    """
    if model_id in ZOO_BY_ID:
        return ZOO_BY_ID[model_id]
    match = _SEED_SUFFIX.match(model_id)
    if match and match["base"] in ZOO_BY_ID:
        return reseed(ZOO_BY_ID[match["base"]], int(match["seed"]))
    close = get_close_matches(model_id, ZOO_BY_ID, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `metacompress zoo list` to see every id."
    raise UnknownName(f"no zoo model {model_id!r}; {hint}")

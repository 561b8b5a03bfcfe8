"""Procedural architectures: seeded random networks from ``archspec``'s grammar, as zoo entries.

``sample_arch(seed, dataset)`` draws one ``ArchSpec`` from a ``random.Random`` seeded by
``(seed, dataset)`` alone, so the same pair gives the same network in every process.
A draw is rejected and redrawn (from the same RNG, so still deterministic) until it

* fits the size budget: at most ``MAX_PARAMS`` parameters and ``MAX_MACS`` MACs, so it
  trains in seconds on two cores;
* holds a block whose hidden channels are internal (``inverted``, ``residual``, ``se``,
  or an ``mlp`` block with BatchNorm), so analysis finds at least one prunable unit
  whatever the grouped convs and concatenations around it do;
* equals no hand-written zoo model of its dataset layer for layer (``layer_signature``),
  so a generated network can never be a held-out family's model in disguise.

Generated models are first-class zoo entries (family ``"generated"``, ids
``gen-0007-shapes``; ``-s<seed>`` selects another training seed): built, cached and
loaded exactly like the hand-written ones. Index ``i`` of ``generated_entries(n)`` draws
``sample_arch(i, dataset)`` with the datasets taken in turn (``GENERATED_DATASETS``).

Accuracy floor, skip-and-record: a generated entry carries no build floor (its
``min_test_accuracy`` is 0), so one unlucky draw never fails a build of hundreds. Every
model is trained and cached with its record (so a resumed build does not retrain it),
and ``build_generated`` sorts the records into ``kept`` and ``skipped`` by
``GENERATED_FLOORS``; ``usable_generated`` is what a training split should draw from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from math import ceil, prod
from pathlib import Path

import torch

from metacompress.envs.zoo.cache import ZooRecord, build_zoo, cached_record
from metacompress.envs.zoo.catalog import ID_RESOLVERS, ZOO, ZooEntry
from metacompress.envs.zoo.training import module_macs, module_params
from metacompress.envs.zoo.archspec import (
    BLOCK_KINDS,
    GENERATED_FAMILY,
    NORMS,
    ArchSpec,
    BlockSpec,
    block_out,
    build_arch,
    layer_signature,
)
from metacompress.envs.zoo.datasets import DATASETS, dataset_info
from metacompress.envs.zoo.families import build_model
from metacompress.errors import InvalidArch

MAX_PARAMS = 300_000
MAX_MACS = 3_000_000
MAX_DRAWS = 1_000
WIDTHS = (8, 12, 16, 24, 32, 48, 64)  # all divisible by 4, so grouped convs of 2 or 4 groups fit
GENERATED_DATASETS = ("digits", "mnist1d", "mnist", "shapes")  # pinned: a new dataset must not renumber the ids
_INTERNAL = ("inverted", "residual", "se")  # blocks whose hidden channels no other block sees

# Training recipe per dataset: "briefly" means 13k-32k sample passes, 1-16 s on one core
# for these sizes. Floors sit ~10 points under the weakest hand-written family's floor on
# the dataset (chance is 0.10), but only 3x chance on shapes, the hardest set, where these
# short recipes reach 0.42-0.44 on the draws tried: below a floor compression has little to lose.
GENERATED_RECIPES: dict[str, dict] = {
    "digits": {"epochs": 15, "batch_size": 64},
    "mnist1d": {"epochs": 3},
    "mnist": {"epochs": 8},
    "shapes": {"epochs": 4, "max_train_samples": 8000, "lr": 5e-3},
}
GENERATED_FLOORS: dict[str, float] = {"digits": 0.75, "mnist1d": 0.60, "mnist": 0.75, "shapes": 0.30}
_ID = re.compile(r"^gen-(?P<index>\d{4,})-(?P<dataset>[a-z0-9]+)(?:-s(?P<seed>\d+))?$")


def sample_arch(seed: int, dataset: str) -> ArchSpec:
    """Draw the architecture of generated network ``seed`` for ``dataset``.

    Args:
        seed: any int >= 0; with ``dataset`` it fixes the draw completely.
        dataset: a key of ``DATASETS``; its input shape fixes the input kind (image or
            sequence), the resolutions available and the stem's stride choices.

    Returns:
        A spec meeting the size budget, with a prunable block, unlike any hand-written
        zoo model (see the module docstring).

    Raises:
        UnknownName: if ``dataset`` is not registered.
        InvalidArch: if ``seed`` is negative.
    """
    if seed < 0:
        raise InvalidArch(f"sample_arch needs a seed >= 0, got {seed}")
    info = dataset_info(dataset)
    rng = random.Random(f"metacompress.generator:{seed}:{dataset}")  # str seeds hash stably (sha512)
    with _one_thread(), torch.random.fork_rng(devices=[]):  # the checks' weights do not matter; keep the caller's RNG
        for _ in range(MAX_DRAWS):
            spec = _draw(rng, info.input_shape)
            if _acceptable(spec, info.input_shape, info.num_classes):
                return spec
    raise InvalidArch(f"no acceptable draw for seed {seed} on {dataset} in {MAX_DRAWS} tries; raise MAX_PARAMS or MAX_MACS")


def _draw(rng: random.Random, input_shape: tuple[int, ...]) -> ArchSpec:
    """One unfiltered draw from the grammar."""
    input_kind = "image" if len(input_shape) == 3 else "sequence"
    if rng.random() < 0.1:  # an MLP on the flattened input
        blocks = tuple(BlockSpec("mlp", rng.choice(WIDTHS), kernel=1, norm=rng.choice(NORMS)) for _ in range(rng.randint(2, 4)))
        return ArchSpec(input_kind, None, blocks, "flatten")
    depth = rng.randint(2, 8)
    mlp_count = min(rng.choice((0, 0, 1, 2)), depth - 1)
    spatial = list(input_shape[1:])
    # a stride-2 stem halves the resolution (14x14 -> 7x7, 16x16 -> 8x8, 40 -> 20) where the input allows it
    stem = BlockSpec("conv", rng.choice(WIDTHS[:5]), rng.choice((3, 5)), 2 if min(spatial) >= 14 and rng.random() < 0.5 else 1)
    spatial = [ceil(side / stem.stride) for side in spatial]
    kinds = [k for k in BLOCK_KINDS if k != "mlp" and (k != "dilated" or input_kind == "sequence")]
    width, blocks = stem.width, []
    for _ in range(depth - mlp_count):
        kind = rng.choice(kinds)
        stride = 2 if kind in ("conv", "dwsep", "inverted", "grouped", "residual") and min(spatial) >= 4 and rng.random() < 0.3 else 1
        out = width if kind == "se" else rng.choice([w for w in WIDTHS if width // 2 <= w <= 2 * width])
        kernel = 1 if kind == "se" else rng.choice((3, 5) if kind in ("dwsep", "inverted", "dilated") else (1, 3, 5))
        blocks.append(
            BlockSpec(
                kind,
                out,
                kernel,
                stride,
                expansion=rng.choice((2, 3, 4)) if kind == "inverted" else 1,
                groups=rng.choice((2, 4)) if kind == "grouped" else 1,
                dilation=rng.choice((2, 4)) if kind == "dilated" else 1,
            )
        )
        width = block_out(width, blocks[-1])
        spatial = [ceil(side / stride) for side in spatial]
    pool = "flatten" if prod(spatial) * width <= 1024 and rng.random() < 0.3 else "avg"
    blocks += [BlockSpec("mlp", rng.choice(WIDTHS), kernel=1, norm=rng.choice(NORMS)) for _ in range(mlp_count)]
    return ArchSpec(input_kind, stem, tuple(blocks), pool)


def _acceptable(spec: ArchSpec, input_shape: tuple[int, ...], num_classes: int) -> bool:
    if not any(b.kind in _INTERNAL or (b.kind == "mlp" and b.norm == "batch") for b in spec.blocks):
        return False
    model = build_arch(spec, input_shape, num_classes)
    if module_params(model) > MAX_PARAMS or module_macs(model, input_shape) > MAX_MACS:
        return False
    return layer_signature(model, input_shape) not in _zoo_signatures(input_shape, num_classes)


@lru_cache(maxsize=None)
def _zoo_signatures(input_shape: tuple[int, ...], num_classes: int) -> frozenset[tuple]:
    """Layer signatures of every hand-written zoo model for this input (held-out ones included)."""
    return frozenset(
        layer_signature(build_model(e.family, e.input_shape, e.num_classes, e.width, e.depth), input_shape)
        for e in ZOO
        if e.input_shape == input_shape and e.num_classes == num_classes
    )


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the draw checks on one thread: on a busy 2-core machine a tiny conv runs ~10x
    faster on one thread than on two (OpenMP threads spin-wait for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generated_id(index: int, dataset: str, seed: int = 0) -> str:
    """``gen-0007-shapes``, plus ``-s<seed>`` if the training seed is not 0."""
    return f"gen-{index:04d}-{dataset}" + (f"-s{seed}" if seed else "")


def generated_entry(index: int, dataset: str | None = None, seed: int = 0) -> ZooEntry:
    """The zoo entry of generated network ``index``.

    Args:
        index: the architecture seed, >= 0.
        dataset: a key of ``DATASETS``; default ``GENERATED_DATASETS[index % 4]``.
        seed: the training seed (initial weights, batch order, data split), >= 0.

    Raises:
        UnknownName: if ``dataset`` is not registered.
        InvalidArch: if ``index`` is negative.
    """
    dataset = dataset or GENERATED_DATASETS[index % len(GENERATED_DATASETS)]
    spec = sample_arch(index, dataset)
    return ZooEntry(
        id=generated_id(index, dataset, seed),
        family=GENERATED_FAMILY,
        dataset=dataset,
        width=(spec.stem or spec.blocks[0]).width,
        depth=len(spec.blocks),
        seed=seed,
        arch=spec,
        **GENERATED_RECIPES[dataset],
    )


def generated_entries(n: int, start: int = 0) -> tuple[ZooEntry, ...]:
    """Entries ``start .. start + n - 1``, the datasets taken in turn (digits, mnist1d, mnist, shapes)."""
    return tuple(generated_entry(index) for index in range(start, start + n))


def generated_entry_from_id(model_id: str) -> ZooEntry | None:
    """The entry named by a ``gen-<index>-<dataset>[-s<seed>]`` id; ``None`` if it is not one."""
    match = _ID.match(model_id)
    if not match or match["dataset"] not in DATASETS:
        return None
    return generated_entry(int(match["index"]), match["dataset"], int(match["seed"] or 0))


def accuracy_floor(entry: ZooEntry) -> float:
    """The test accuracy a model must reach to be used: ``GENERATED_FLOORS`` of its dataset
    for a generated entry (skip-and-record), its build floor for a hand-written one."""
    return GENERATED_FLOORS[entry.dataset] if entry.family == GENERATED_FAMILY else entry.min_test_accuracy


def meets_floor(record: ZooRecord) -> bool:
    """Whether a model reached its ``accuracy_floor`` on the test split."""
    return record.test_accuracy >= accuracy_floor(record.entry)


@dataclass(frozen=True)
class GeneratedBuild:
    """What ``build_generated`` produced: the records at or above their floor, and the rest.

    Args:
        kept: records of models at or above ``GENERATED_FLOORS``, in entry order.
        skipped: records of the models below it (cached, but not for training).
    """

    kept: tuple[ZooRecord, ...]
    skipped: tuple[ZooRecord, ...]


def build_generated(
    n: int, cache_dir: Path | str | None = None, progress: bool = True, force: bool = False
) -> GeneratedBuild:
    """Train and cache generated networks ``0 .. n-1`` (resumable, like ``build_zoo``).

    Args:
        n: how many, >= 1.
        cache_dir: the zoo folder; default ``zoo.default_cache_dir()``.
        progress: show a tqdm progress bar (on stderr).
        force: retrain models that are already cached.

    Raises:
        InvalidArch: if ``n`` < 1.
        CacheCorrupted: if a cached model fails its hash check and ``force`` is False.
    """
    if n < 1:
        raise InvalidArch(f"build at least one generated model, got n={n}")
    records = build_zoo(generated_entries(n), cache_dir, progress=progress, force=force)
    return GeneratedBuild(
        kept=tuple(r for r in records if meets_floor(r)), skipped=tuple(r for r in records if not meets_floor(r))
    )


def usable_generated(n: int, cache_dir: Path | str | None = None) -> tuple[ZooEntry, ...]:
    """The cached entries among ``0 .. n-1`` that met their floor: what training may draw from.

    Uncached entries are left out (build them with ``build_generated`` first).
    """
    records = [cached_record(entry, cache_dir) for entry in generated_entries(n)]
    return tuple(record.entry for record in records if record is not None and meets_floor(record))


ID_RESOLVERS["gen-"] = generated_entry_from_id  # get_entry("gen-0007-shapes") works once the zoo package is imported

__all__ = [
    "GENERATED_DATASETS",
    "GENERATED_FLOORS",
    "GENERATED_RECIPES",
    "GeneratedBuild",
    "accuracy_floor",
    "build_generated",
    "generated_entries",
    "generated_entry",
    "generated_entry_from_id",
    "meets_floor",
    "sample_arch",
    "usable_generated",
]

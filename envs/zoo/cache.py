"""The model zoo: trained models the agent learns to compress, built once and cached.

A ``ZooEntry`` says how to make one model (family, dataset, knobs, training recipe,
seed) and the test accuracy it must reach. ``build_zoo`` trains what the cache lacks and
``load_zoo_model`` returns a model with its data and record, verifying the cached
file's sha256 first. The catalogue itself (``ZOO``, ``QUICK``, accuracy floors) lives in
``envs/zoo/catalog.py``; adding a model is one line there.

Cache layout (one folder, default ``$METACOMPRESS_CACHE/zoo`` or
``~/.cache/metacompress/zoo``), per model:
    ``<id>.safetensors``: the state dict (safetensors: loading runs no pickled code);
    ``<id>.json``: the entry, accuracies, params, MACs, train seconds, the sha256 of the
    safetensors file, and the package version, torch version and training revision
    that made it (a record of another training revision is rebuilt, not served).
Both are written atomically (temp file, then rename) and the JSON last, so a model
counts as cached only once both files are complete: an interruption loses at most the
model being trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from tqdm.auto import tqdm

from metacompress._version import __version__
from metacompress.compressors.io import write_bytes_atomic, write_text_atomic
from metacompress.envs.zoo.training import TRAINING_REVISION, model_accuracy, module_macs, module_params, train_model
from metacompress.envs.zoo.catalog import ZOO, ZooEntry, get_entry
from metacompress.envs.zoo.datasets import DatasetSplits, Split, load_dataset
from metacompress.envs.zoo.families import build_model
from metacompress.envs.zoo.archspec import build_arch
from metacompress.envs.executor import Executor, InProcessExecutor
from metacompress.errors import CacheCorrupted, ZooError

logger = logging.getLogger(__name__)

RECORD_FORMAT = 2  # 2: records the training revision


@dataclass(frozen=True)
class ZooRecord:
    """What building one zoo model produced; stored as ``<id>.json`` next to its weights.

    Args:
        entry: the recipe the model was built from.
        test_accuracy: top-1 accuracy on the test split, in [0, 1].
        search_accuracy: top-1 accuracy on the search split, in [0, 1].
        params: parameters (BatchNorm running statistics excluded).
        macs: multiply-accumulates per sample (``FlopCounterMode`` FLOPs / 2).
        train_seconds: wall time of training alone, seconds.
        sha256: hex digest of the ``.safetensors`` file.
        package_version: metacompress version that built it.
        torch_version: torch version that built it.
        training_revision: ``TRAINING_REVISION`` of the code that built it.
    """

    entry: ZooEntry
    test_accuracy: float
    search_accuracy: float
    params: int
    macs: int
    train_seconds: float
    sha256: str
    package_version: str
    torch_version: str
    training_revision: int

    def to_json(self) -> str:
        return json.dumps({"format": RECORD_FORMAT, **asdict(self)}, indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ZooRecord:
        """The record of a parsed ``<id>.json`` (the ``format`` key is ignored)."""
        fields = {key: value for key, value in data.items() if key not in ("format", "entry")}
        return cls(entry=ZooEntry.from_dict(data["entry"]), **fields)

    @classmethod
    def from_json(cls, text: str) -> ZooRecord:
        return cls.from_dict(json.loads(text))


def default_cache_dir() -> Path:
    """The zoo's folder: ``$METACOMPRESS_CACHE/zoo`` if that variable is set, else
    ``~/.cache/metacompress/zoo``. ``METACOMPRESS_CACHE`` is the root of every cache."""
    root = os.environ.get("METACOMPRESS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "metacompress") / "zoo"


def _paths(entry: ZooEntry, cache_dir: Path) -> tuple[Path, Path]:
    return cache_dir / f"{entry.id}.safetensors", cache_dir / f"{entry.id}.json"


def _fix_hint(entry: ZooEntry, path: Path) -> str:
    return f"rebuild it with `metacompress zoo build --force {entry.id}` or delete {path}"


def cached_record(entry: ZooEntry, cache_dir: Path | str | None = None) -> ZooRecord | None:
    """The record of ``entry`` if its two files are in the cache and it was built from
    this very entry by this training code; ``None`` if missing or stale.

    The weights' hash is not checked here (``load_zoo_model`` and ``build_zoo`` do).

    Raises:
        CacheCorrupted: if the JSON record exists but cannot be read.
    """
    weights, meta = _paths(entry, Path(cache_dir) if cache_dir else default_cache_dir())
    if not (weights.exists() and meta.exists()):
        return None
    try:
        data = json.loads(meta.read_text())
        if data["format"] != RECORD_FORMAT:
            logger.info("%s has record format %s, not %s; treating it as not cached", meta, data["format"], RECORD_FORMAT)
            return None
        record = ZooRecord.from_dict(data)
    except (ValueError, TypeError, KeyError, ZooError) as exc:
        raise CacheCorrupted(f"{meta} is not a valid zoo record ({exc!r}); {_fix_hint(entry, meta)}") from exc
    if record.entry != entry or record.training_revision != TRAINING_REVISION:
        logger.info("%s in %s was built from another recipe or training code; treating it as not cached", entry.id, meta.parent)
        return None
    return record


def _verified_weights(record: ZooRecord, cache_dir: Path) -> bytes:
    """The cached safetensors bytes of ``record``'s model, after the sha256 check.

    Raises:
        CacheCorrupted: naming the file and the fix, if the hash differs from the record's.
    """
    weights, meta = _paths(record.entry, cache_dir)
    blob = weights.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != record.sha256:
        raise CacheCorrupted(
            f"{weights} is corrupted: its sha256 is {actual[:16]}..., but {meta.name} records "
            f"{record.sha256[:16]}...; {_fix_hint(record.entry, weights)}"
        )
    return blob


def make_model(entry: ZooEntry) -> nn.Module:
    """The untrained model of ``entry``, its weights drawn from ``entry.seed`` without
    touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        if entry.arch is not None:
            return build_arch(entry.arch, entry.input_shape, entry.num_classes)
        return build_model(entry.family, entry.input_shape, entry.num_classes, entry.width, entry.depth)


def _train_entry(entry: ZooEntry) -> tuple[nn.Module, DatasetSplits, float]:
    """Train ``entry``'s model; returns it (eval mode), its data and the training seconds."""
    splits = load_dataset(entry.dataset, entry.seed)
    model = make_model(entry)
    generator = torch.Generator().manual_seed(entry.seed)
    train = splits.train
    if entry.max_train_samples is not None and entry.max_train_samples < len(train):
        keep = torch.randperm(len(train), generator=generator)[: entry.max_train_samples]
        train = Split(train.x[keep], train.y[keep])
    start = time.perf_counter()
    train_model(
        model,
        train,
        epochs=entry.epochs,
        batch_size=entry.batch_size,
        lr=entry.lr,
        weight_decay=entry.weight_decay,
        generator=generator,
    )
    return model, splits, time.perf_counter() - start


def _trained(entry: ZooEntry) -> tuple[bytes, ZooRecord] | str:
    """Train and measure one model: its safetensors bytes and record, or why it missed its floor.

    Writes nothing, so it runs on any worker (``envs.executor``); the caller caches the bytes.
    """
    model, splits, seconds = _train_entry(entry)
    test_accuracy = model_accuracy(model, splits.test)
    if test_accuracy < entry.min_test_accuracy:
        return f"{entry.id} reached test accuracy {test_accuracy:.4f}, below its floor {entry.min_test_accuracy:.2f}"
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # One metadata key only: safetensors writes a map's keys in arbitrary order, and the
    # file must be byte-identical for the same seed (its sha256 is the integrity check).
    blob = save_safetensors(state, metadata={"id": entry.id})
    record = ZooRecord(
        entry=entry,
        test_accuracy=test_accuracy,
        search_accuracy=model_accuracy(model, splits.search),
        params=module_params(model),
        macs=module_macs(model, entry.input_shape),
        train_seconds=round(seconds, 3),
        sha256=hashlib.sha256(blob).hexdigest(),
        package_version=__version__,
        torch_version=torch.__version__,
        training_revision=TRAINING_REVISION,
    )
    return blob, record


def _train_on_worker(_, entry: ZooEntry) -> tuple[bytes, ZooRecord] | str:
    return _trained(entry)


def _cache_one(blob: bytes, record: ZooRecord, cache_dir: Path) -> ZooRecord:
    weights, meta = _paths(record.entry, cache_dir)
    write_bytes_atomic(weights, blob)
    write_text_atomic(meta, record.to_json())  # last: its presence marks the model complete
    return record


def build_zoo(
    entries: list[ZooEntry] | tuple[ZooEntry, ...],
    cache_dir: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
    executor: Executor | None = None,
) -> list[ZooRecord]:
    """Train and cache every entry the cache lacks; skip the ones already built.

    Cached files are checked before any training starts. Each model is written as soon
    as it is trained, so an interrupted build resumes where it stopped. A model below its
    accuracy floor is not cached; the others still are, then one error lists the misses.

    Args:
        entries: the models to build, e.g. ``ZOO``, ``QUICK`` or ``[get_entry(id)]``.
        cache_dir: the zoo folder; default ``default_cache_dir()``.
        progress: show a tqdm progress bar (on stderr).
        force: retrain and overwrite entries that are already cached.
        executor: where models train (``envs.executor``; default in-process); the trained
            weights come back here and are cached by this process, so workers need no shared disk.

    Returns:
        One record per entry, in the order given (cached ones read from disk).

    Raises:
        ZooError: if two entries share an id, or a model misses its accuracy floor.
        CacheCorrupted: if a cached model fails its hash check and ``force`` is False.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    ids = [entry.id for entry in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ZooError(f"zoo ids must be unique; repeated: {', '.join(duplicates)}")

    records: dict[str, ZooRecord] = {}
    corrupted = []
    for entry in [] if force else entries:
        try:
            record = cached_record(entry, cache)
            if record is not None:
                _verified_weights(record, cache)
                records[entry.id] = record
        except CacheCorrupted as exc:
            corrupted.append(str(exc))
    if corrupted:
        raise CacheCorrupted(f"{len(corrupted)} cached model(s) failed the integrity check:\n" + "\n".join(corrupted))

    todo = [entry for entry in entries if entry.id not in records]
    logger.info("zoo: %d of %d models cached in %s; training %d", len(records), len(entries), cache, len(todo))
    failures = []
    start = time.perf_counter()
    executor = executor or InProcessExecutor()
    with tqdm(total=len(todo), desc="zoo build", unit="model", disable=not progress) as bar:
        def keep(i: int, built: tuple[bytes, ZooRecord] | str) -> None:
            if isinstance(built, str):
                failures.append(built)
            else:
                records[todo[i].id] = _cache_one(*built, cache)  # each as soon as it is trained: a rerun resumes
            bar.update()

        executor.map(_train_on_worker, todo, on_result=keep)
    logger.info("zoo: trained %d models in %.1f s", len(todo) - len(failures), time.perf_counter() - start)
    if failures:
        raise ZooError(f"{len(failures)} model(s) missed their accuracy floor and were not cached:\n" + "\n".join(failures))
    return [records[entry.id] for entry in entries]


def load_zoo_model(
    model: str | ZooEntry,
    cache_dir: Path | str | None = None,
    build_if_missing: bool = True,
) -> tuple[nn.Module, DatasetSplits, ZooRecord]:
    """A trained zoo model (eval mode) with the data splits it was trained on.

    Args:
        model: a zoo id such as ``"resnet-w16-d2-mnist"`` (``-s<seed>`` appended selects
            another seed), or an entry.
        cache_dir: the zoo folder; default ``default_cache_dir()``.
        build_if_missing: train and cache the model if the cache lacks it.

    Returns:
        ``(model, splits, record)``; the weights passed the sha256 check.

    Raises:
        UnknownName: if the id is not in the zoo (the message lists close matches).
        CacheCorrupted: if the cached weights or record fail the integrity check.
        ZooError: if the model is not cached and ``build_if_missing`` is False.
    """
    entry = get_entry(model) if isinstance(model, str) else model
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    record = cached_record(entry, cache)
    if record is None:
        if not build_if_missing:
            raise ZooError(f"{entry.id} is not in the zoo cache {cache}; run `metacompress zoo build {entry.id}`")
        (record,) = build_zoo([entry], cache, progress=False)
    blob = _verified_weights(record, cache)
    net = make_model(entry)
    net.load_state_dict(load_safetensors(blob))
    net.eval()
    return net, load_dataset(entry.dataset, entry.seed), record


def zoo_table(entries: list[ZooEntry] | tuple[ZooEntry, ...] = ZOO, cache_dir: Path | str | None = None):
    """One row per entry: id, family, dataset, knobs, params, MACs, accuracies, cached?

    Params and MACs come from the cached record, or from an untrained instance when the
    model is not cached (they do not depend on the weights); accuracies are NaN then.

    Returns:
        A pandas DataFrame with columns id, family, dataset, width, depth, params, macs,
        test_accuracy, search_accuracy, min_test_accuracy, train_seconds, cached.
    """
    import pandas as pd

    rows = []
    for entry in entries:
        record = cached_record(entry, cache_dir)
        if record is None:
            model = make_model(entry)
            params, macs = module_params(model), module_macs(model, entry.input_shape)
        else:
            params, macs = record.params, record.macs
        nan = float("nan")
        rows.append(
            {
                "id": entry.id,
                "family": entry.family,
                "dataset": entry.dataset,
                "width": entry.width,
                "depth": entry.depth,
                "params": params,
                "macs": macs,
                "test_accuracy": record.test_accuracy if record else nan,
                "search_accuracy": record.search_accuracy if record else nan,
                "min_test_accuracy": entry.min_test_accuracy,
                "train_seconds": record.train_seconds if record else nan,
                "cached": record is not None,
            }
        )
    return pd.DataFrame(rows)

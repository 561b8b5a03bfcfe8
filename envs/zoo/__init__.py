"""The model zoo and its data: offline datasets, model families, the trained-model catalogue and its cache.

The zoo is the task world's supply of models, not the RL problem: ``envs`` builds tasks
on top of it, and nothing here imports the env. Besides the hand-written families
(``families``, catalogue in ``catalog``), ``generator`` draws random networks from a grammar
of real blocks (``archspec``), cached like the catalogue's models.
"""

from metacompress.envs.zoo.cache import (
    ZooRecord,
    build_zoo,
    cached_record,
    default_cache_dir,
    load_zoo_model,
    make_model,
    zoo_table,
)
from metacompress.envs.zoo.catalog import QUICK, ZOO, ZooEntry, get_entry
from metacompress.envs.zoo.datasets import DATASETS, DatasetSplits, Split, load_dataset
from metacompress.envs.zoo.families import FAMILIES, Family, build_model
from metacompress.envs.zoo.archspec import ArchSpec, BlockSpec, build_arch
from metacompress.envs.zoo.generator import build_generated, generated_entries, sample_arch, usable_generated

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "DATASETS",
    "FAMILIES",
    "QUICK",
    "ZOO",
    "DatasetSplits",
    "Family",
    "Split",
    "ZooEntry",
    "ZooRecord",
    "build_arch",
    "build_generated",
    "build_model",
    "build_zoo",
    "cached_record",
    "default_cache_dir",
    "get_entry",
    "load_dataset",
    "generated_entries",
    "load_zoo_model",
    "make_model",
    "sample_arch",
    "usable_generated",
    "zoo_table",
]

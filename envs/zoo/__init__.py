"""The model zoo and its data: offline datasets, model families, the trained-model catalogue and its cache.

The zoo is the task world's supply of models, not the RL problem: ``envs`` builds tasks
on top of it, and nothing here imports the env.
"""

from metacompress.envs.zoo.cache import (
    ZooRecord,
    build_zoo,
    cached_record,
    default_cache_dir,
    load_zoo_model,
    zoo_table,
)
from metacompress.envs.zoo.catalog import QUICK, ZOO, ZooEntry, get_entry
from metacompress.envs.zoo.datasets import DATASETS, DatasetSplits, Split, load_dataset
from metacompress.envs.zoo.families import FAMILIES, Family, build_model

__all__ = [
    "DATASETS",
    "FAMILIES",
    "QUICK",
    "ZOO",
    "DatasetSplits",
    "Family",
    "Split",
    "ZooEntry",
    "ZooRecord",
    "build_model",
    "build_zoo",
    "cached_record",
    "default_cache_dir",
    "get_entry",
    "load_dataset",
    "load_zoo_model",
    "zoo_table",
]

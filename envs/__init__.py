"""The RL problem: datasets, the model zoo, tasks and the suite, and the Gymnasium envs.

Importing this package registers ``metacompress/Compress-v0`` and
``metacompress/MetaCompress-v0`` with Gymnasium.
"""

from metacompress.envs.registration import COMPRESS_ID, META_COMPRESS_ID, register_envs

register_envs()

from metacompress.envs.compression_env import ENV_VERSION, CompressionEnv  # noqa: E402
from metacompress.envs.context import TaskContext  # noqa: E402
from metacompress.envs.evaluator import ModelEvaluator  # noqa: E402
from metacompress.envs.meta_env import MetaCompressEnv  # noqa: E402
from metacompress.envs.suite import TaskSuite, default_suite  # noqa: E402
from metacompress.envs.tasks import Budget, Task, resolve_hardware  # noqa: E402
from metacompress.envs.world import TaskWorld  # noqa: E402
from metacompress.envs.datasets import DATASETS, DatasetSplits, Split, load_dataset  # noqa: E402
from metacompress.envs.families import FAMILIES, Family, build_model  # noqa: E402
from metacompress.envs.archspec import ArchSpec, BlockSpec, build_arch  # noqa: E402
from metacompress.envs.generator import build_generated, generated_entries, sample_arch  # noqa: E402
from metacompress.envs.zoo import (  # noqa: E402
    QUICK,
    ZOO,
    ZooEntry,
    ZooRecord,
    build_zoo,
    default_cache_dir,
    get_entry,
    load_zoo_model,
    zoo_table,
)

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "COMPRESS_ID",
    "DATASETS",
    "ENV_VERSION",
    "FAMILIES",
    "META_COMPRESS_ID",
    "QUICK",
    "ZOO",
    "Budget",
    "CompressionEnv",
    "DatasetSplits",
    "Family",
    "MetaCompressEnv",
    "ModelEvaluator",
    "Split",
    "Task",
    "TaskContext",
    "TaskSuite",
    "TaskWorld",
    "ZooEntry",
    "ZooRecord",
    "build_arch",
    "build_generated",
    "build_model",
    "build_zoo",
    "default_cache_dir",
    "default_suite",
    "generated_entries",
    "get_entry",
    "load_dataset",
    "load_zoo_model",
    "register_envs",
    "resolve_hardware",
    "sample_arch",
    "zoo_table",
]

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

__all__ = [
    "COMPRESS_ID",
    "ENV_VERSION",
    "META_COMPRESS_ID",
    "Budget",
    "CompressionEnv",
    "MetaCompressEnv",
    "ModelEvaluator",
    "Task",
    "TaskContext",
    "TaskSuite",
    "TaskWorld",
    "default_suite",
    "register_envs",
    "resolve_hardware",
]

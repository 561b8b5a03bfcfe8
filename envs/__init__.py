"""The RL problem: tasks and the suite, the task world, features, and the Gymnasium envs.

Importing this package registers ``metacompress/Compress-v1`` and
``metacompress/MetaCompress-v1`` with Gymnasium. The models and data the tasks are
made of live in ``metacompress.envs.zoo``.
"""

from metacompress.envs.actions import ActionCodec
from metacompress.envs.compression_env import ENV_VERSION, CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.meta_env import MetaCompressEnv
from metacompress.envs.registration import COMPRESS_ID, DEMO_TASK, META_COMPRESS_ID, register_envs
from metacompress.envs.suite import TaskSuite, default_suite
from metacompress.envs.tasks import Task, resolve_hardware
from metacompress.envs.world import TaskWorld

register_envs()

__all__ = [
    "COMPRESS_ID",
    "DEMO_TASK",
    "ENV_VERSION",
    "META_COMPRESS_ID",
    "ActionCodec",
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

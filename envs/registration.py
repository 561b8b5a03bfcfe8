"""Gymnasium registration of the two environments, and the demo task ``Compress`` runs by default.

The id suffix is the env's version (``ENV_VERSION``): a change to the observation,
action, reward or episode bumps both.
"""

from __future__ import annotations

import gymnasium as gym

from metacompress.compressors.budget import Budget
from metacompress.envs.compression_env import ENV_VERSION, CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld

COMPRESS_ID = f"metacompress/Compress-v{ENV_VERSION}"
META_COMPRESS_ID = f"metacompress/MetaCompress-v{ENV_VERSION}"
DEMO_TASK = Task("resnet-w8-d1-digits", "m7-mcu", Budget("latency", 0.5))


def make_compress_env(context: TaskContext | None = None, **kwargs) -> CompressionEnv:
    """``CompressionEnv`` on ``context``, or on ``DEMO_TASK`` (a quick-zoo model on a preset) if none."""
    if context is None:
        context = TaskWorld().context(DEMO_TASK)
    return CompressionEnv(context, **kwargs)


def register_envs() -> None:
    """Register both env ids (idempotent); entry points are strings, so nothing heavy loads here."""
    if COMPRESS_ID not in gym.registry:
        gym.register(id=COMPRESS_ID, entry_point="metacompress.envs.registration:make_compress_env")
    if META_COMPRESS_ID not in gym.registry:
        gym.register(id=META_COMPRESS_ID, entry_point="metacompress.envs.meta_env:MetaCompressEnv")

"""Gymnasium registration of the two environments (run on ``import metacompress``)."""

from __future__ import annotations

import gymnasium as gym

COMPRESS_ID = "metacompress/Compress-v0"
META_COMPRESS_ID = "metacompress/MetaCompress-v0"


def register_envs() -> None:
    """Register both env ids (idempotent); entry points are strings, so nothing heavy loads here."""
    if COMPRESS_ID not in gym.registry:
        gym.register(id=COMPRESS_ID, entry_point="metacompress.envs.compression_env:CompressionEnv")
    if META_COMPRESS_ID not in gym.registry:
        gym.register(id=META_COMPRESS_ID, entry_point="metacompress.envs.meta_env:MetaCompressEnv")

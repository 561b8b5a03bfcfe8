"""The tiny world's tasks whose option tables the predictor tests measure once per session."""

from __future__ import annotations

from metacompress.compressors.budget import Budget
from metacompress.envs import Task

TASKS = {name: Task(name, "bismo-edge", Budget("bitops", 0.3)) for name in ("mlp", "vgg", "resnet")}

"""``MetaCompressEnv``: a new task at every reset, one observation/action space for all."""

from __future__ import annotations

from typing import Callable, Sequence

from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld
from metacompress.errors import MetacompressError


class MetaCompressEnv(CompressionEnv):
    """``CompressionEnv`` over a task list: each reset samples a task with ``np_random``.

    Everything in ``CompressionEnv``'s spec holds per episode; ``info["task"]`` at reset
    names the sampled task. With ``attempts`` > 1 (trial mode) one episode is K attempts
    at the same task, the RL^2 setting for ``RecurrentPPO`` (whose LSTM state resets at
    episode start, i.e. at every new task).

    Args:
        tasks: the tasks to sample from, or a split name of the default suite
            (``"train"``, ``"heldout"``).
        attempts: attempts per episode.
        world: where models and contexts come from (default: a new ``TaskWorld``).
        render_mode: ``"ansi"`` or None.
        observation: ``"step"`` or ``"network"`` (see ``CompressionEnv``).
        anchor: turns each task's context into the one the episodes run on (e.g.
            anchored on the exact solver's plan, ``agents.residual.solver_anchored``);
            applied once per task and cached.
    """

    def __init__(
        self,
        tasks: Sequence[Task] | str = "train",
        attempts: int = 1,
        world: TaskWorld | None = None,
        render_mode: str | None = None,
        observation: str = "step",
        anchor: Callable[[TaskContext], TaskContext] | None = None,
    ) -> None:
        super().__init__(None, attempts=attempts, render_mode=render_mode, observation=observation)
        self.anchor = anchor
        self._anchored: dict[str, TaskContext] = {}
        if isinstance(tasks, str):
            from metacompress.envs.suite import default_suite

            tasks = default_suite().split(tasks)
        self.tasks = list(tasks)
        if not self.tasks:
            raise MetacompressError("MetaCompressEnv needs at least one task; pass tasks=[...] or a split name")
        self.world = world or TaskWorld()

    def _next_context(self) -> TaskContext:
        task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        if self.anchor is None:
            return self.world.context(task)
        if task.id not in self._anchored:
            self._anchored[task.id] = self.anchor(self.world.context(task))
        return self._anchored[task.id]

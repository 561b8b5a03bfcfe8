"""``CompressionEnv``: compressing one model on one hardware under one budget, as an episode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metacompress.compressors.budget import PlanVectors, UnitChoice
from metacompress.compressors.plan import Plan
from metacompress.envs.actions import ActionCodec
from metacompress.envs.context import TaskContext
from metacompress.envs.features import (
    NETWORK_OBSERVATION_DIM,
    OBSERVATION_DIM,
    TRIAL_FEATURES,
    executed_levels,
    observe,
    trial_features,
)
from metacompress.errors import MetacompressError

ENV_VERSION = 1
OBSERVATIONS = {"step": OBSERVATION_DIM, "network": NETWORK_OBSERVATION_DIM}


@dataclass
class _Decision:
    unit: str
    raw: UnitChoice
    executed: UnitChoice
    kept: int
    channels: int
    w_bits: int
    a_bits: int


class CompressionEnv(gym.Env):
    """Compress one model for one hardware under a hard budget, one unit per step.

    Observation:
        ``Box(-1, 1, (OBSERVATION_DIM,))``: the current unit's static features, the budget,
        the episode's progress and committed cost, the previous action, trial-mode
        feedback and the HELP-style hardware embedding. Every feature, its range and why it
        transfers across models and hardware is tabled in ``metacompress.envs.features``.
    Action:
        ``Box(-1, 1, (3,))`` mapped to (prune ratio in [0, max_prune], weight bits 2-8,
        activation bits 2-8) *around the task's anchor*: the uniform setting that just
        fits the budget (``TaskContext.codec``, see ``envs.actions``). Action 0 keeps the
        anchor's compression level in that coordinate, +1 compresses it fully, -1 not at
        all. So an untrained policy starts from a feasible uniform plan
        and learns where to deviate. Bits use seven equal-width bins (HAQ's mapping);
        channels go in whole channel steps; bits round up to what the hardware executes.
    Budget projection:
        AMC-style, during the episode: a choice is executed only if the plan still fits
        with every later unit at maximum compression; otherwise it moves toward this unit's
        maximum compression until it fits (``compressors.budget``). Every finished plan is
        within budget; an infeasible task is refused when the context is built.
        With ``observation="network"`` the observation also holds the current unit's anchor
        levels and the whole network as a padded unit table (``envs.features``).
    Reward:
        0 until the last unit; then the proxy accuracy change on the search split
        (compressed minus original, a fraction; e.g. -0.012 = 1.2 points lost), minus
        the task's ``baseline_change`` (0 unless the context is anchored on a solver's
        plan, see ``TaskContext.anchored``: then the reward is the gain over that plan).
    Episode end:
        terminated after every compressible unit has been decided, ``attempts`` times
        (trial mode: attempts > 1, each attempt's reward paid at its end, its feedback in
        the observation; the RL^2 setting for recurrent policies).
    Info:
        every step: ``unit``, ``raw_action``, ``executed_action`` (kept channels, bits);
        at each attempt's end also ``plan`` (a ``Plan``), ``proxy_accuracy``,
        ``accuracy_change``, ``cost_ratio`` (of unpruned W8A8), ``budget_ratio`` (of the
        budget, <= 1), ``attempt``.
    Version history:
        1: first release (actions relative to the budget's uniform anchor).

    Args:
        context: the task (see ``envs.context.TaskContext``); ``None`` only for subclasses
            that choose one per reset (``MetaCompressEnv``).
        attempts: attempts per episode (1 = zero-shot episodes).
        render_mode: ``"ansi"`` renders the decisions so far as a table.
        observation: ``"step"`` (the current unit's row) or ``"network"`` (plus its anchor
            and the whole network's unit table).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self, context: TaskContext | None = None, attempts: int = 1, render_mode: str | None = None, observation: str = "step"
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'ansi' or None")
        if observation not in OBSERVATIONS:
            raise MetacompressError(f"observation {observation!r} is unknown; use one of {', '.join(OBSERVATIONS)}")
        self.context = context
        self.observation = observation
        self.attempts = int(attempts)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (OBSERVATIONS[observation],), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._trial = np.zeros(TRIAL_FEATURES, dtype=np.float32)

    # episode control --------------------------------------------------------------------
    def _next_context(self) -> TaskContext:
        """The task of the next episode (the meta env samples one here)."""
        if self.context is None:
            raise MetacompressError(
                "CompressionEnv needs a task: pass context=TaskWorld().context(task), or use "
                "gymnasium.make('metacompress/Compress-v1') for the demo task"
            )
        return self.context

    @property
    def codec(self) -> ActionCodec:
        """How this episode reads actions (the task's anchor)."""
        return self.context.codec

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.context = self._next_context()
        self._attempt = 0
        self._best_reward = -1.0
        self._trial = np.zeros(TRIAL_FEATURES, dtype=np.float32)
        self._start_attempt()
        return self._observe(), {"task": self.context.name}

    def _start_attempt(self) -> None:
        self._t = 0
        self._kept, self._w, self._a = self.context.projector.initial_vectors()
        self._previous = np.zeros(3, dtype=np.float32)
        self._decisions: list[_Decision] = []

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ctx = self.context
        info = self._advance(action)
        reward, terminated = 0.0, False
        if self._t == len(ctx.decision_units):
            reward = self._finish_attempt(info)
            terminated = self._attempt == self.attempts
            if not terminated:
                self._start_attempt()
        observation = self._observe() if not terminated else np.zeros(self.observation_space.shape, dtype=np.float32)
        return observation, reward, terminated, False, info

    def dry_actions(self, actor: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
        """The raw actions (n, 3) ``actor(observation, step)`` takes in one episode, nothing scored.

        Observations depend only on the projection, never on a score (one attempt per
        episode), so replaying these actions executes the same plan: a batch of policy
        rollouts can be drawn first and scored together (``ScoreBook.run_actors``).
        """
        if self.attempts != 1:
            raise MetacompressError("dry_actions needs attempts=1: later attempts observe the earlier scores")
        self.reset()
        actions = []
        for step in range(len(self.context.decision_units)):
            actions.append(np.asarray(actor(self._observe(), step), dtype=np.float32))
            self._advance(actions[-1])
        return np.stack(actions)

    def _advance(self, action: np.ndarray) -> dict[str, Any]:
        """Execute one unit's action through the projection (no scoring); the step's info."""
        ctx = self.context
        unit = ctx.decision_units[self._t]
        raw = self.codec.choice(action, self._t)
        executed, (kept, w_bits, a_bits) = ctx.projector.project(unit, raw, self._kept, self._w, self._a)
        self._decisions.append(_Decision(unit.name, raw, executed, kept, unit.channels, w_bits, a_bits))
        self._previous = executed_levels(unit, kept, w_bits, a_bits, ctx.max_prune)
        info: dict[str, Any] = {
            "unit": unit.name,
            "raw_action": (raw.prune_ratio, raw.w_bits, raw.a_bits),
            "executed_action": (kept, w_bits, a_bits),
        }
        self._t += 1
        return info

    def plan_of(self, actions: np.ndarray) -> Plan:
        """The executed plan raw actions (n, 3) give through this task's projection, unscored.

        What ``step`` executes for the same actions, without the evaluation, so a batch's
        plans can be scored together first (``ScoreBook.run_batch``).
        """
        ctx = self.context if self.context is not None else self._next_context()
        kept, w_bits, a_bits = ctx.projector.initial_vectors()
        for t, unit in enumerate(ctx.decision_units):
            ctx.projector.project(unit, ctx.codec.choice(np.asarray(actions[t], dtype=np.float32), t), kept, w_bits, a_bits)
        return Plan.from_kept(ctx.spec, kept, w_bits, a_bits)

    def _finish_attempt(self, info: dict[str, Any]) -> float:
        ctx = self.context
        plan = Plan.from_kept(ctx.spec, self._kept, self._w, self._a)
        change = ctx.evaluator.proxy_change(plan)
        cost_ratio = ctx.cost_ratio(plan.kept, plan.w_bits, plan.a_bits)
        self._attempt += 1
        self._best_reward = max(self._best_reward, change)
        if self.attempts > 1:
            levels = [(d.kept, d.channels, d.w_bits, d.a_bits) for d in self._decisions]
            self._trial = trial_features(self._attempt / self.attempts, change, self._best_reward, levels, ctx.max_prune,
                                         cost_ratio / ctx.budget.fraction)
        info.update(
            plan=plan,
            proxy_accuracy=ctx.evaluator.base_search_accuracy + change,
            accuracy_change=change,
            cost_ratio=cost_ratio,
            budget_ratio=cost_ratio / ctx.budget.fraction,
            attempt=self._attempt,
            decisions=self._decision_rows(),
        )
        return float(change - ctx.baseline_change)

    # observation and rendering ----------------------------------------------------------
    def _observe(self) -> np.ndarray:
        vectors = PlanVectors(self._kept, self._w, self._a)
        return observe(self.context, self._t, vectors, self._previous, self._trial, self.observation)

    def _decision_rows(self) -> list[dict]:
        return [
            {
                "unit": d.unit,
                "raw_prune": round(d.raw.prune_ratio, 4),
                "raw_w_bits": d.raw.w_bits,
                "raw_a_bits": d.raw.a_bits,
                "prune_ratio": round(1 - d.kept / d.channels, 4),
                "kept": d.kept,
                "channels": d.channels,
                "w_bits": d.w_bits,
                "a_bits": d.a_bits,
            }
            for d in self._decisions
        ]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"task {self.context.name}  attempt {min(self._attempt + 1, self.attempts)}/{self.attempts}"]
        lines.append(f"{'unit':<28} {'raw p/w/a':>16} {'kept':>9} {'w':>2} {'a':>2}")
        for d in self._decisions:
            raw = f"{d.raw.prune_ratio:.2f}/{d.raw.w_bits}/{d.raw.a_bits}"
            lines.append(f"{d.unit:<28} {raw:>16} {d.kept:>4}/{d.channels:<4} {d.w_bits:>2} {d.a_bits:>2}")
        return "\n".join(lines) + "\n"

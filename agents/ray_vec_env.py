"""Training rollouts on Ray: a stable-baselines3 ``VecEnv`` whose environments live in Ray actors.

``metacompress train --executor ray`` collects PPO / RecurrentPPO rollouts on the cores of
a Ray cluster while SB3 stays the learner in this process (DESIGN.md section 8). Each
actor builds its env once from the picklable env factory (``callbacks.EnvFactory``, so the
zoo models and probes are read from each machine's cache); per step only the actions go
out and (observation, reward, done, info) come back. The semantics are those of SB3's
``SubprocVecEnv`` (auto-reset, ``terminal_observation``, ``TimeLimit.truncated``, seeds and
options passed on reset), so a seeded run collects the same rollouts as with
``DummyVecEnv``. A dead actor is not restarted (its env's episode state would be lost):
the step raises ``ExecutorError`` and the run resumes from its last checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from metacompress.envs.executor import start_ray
from metacompress.errors import ExecutorError


class _EnvActor:
    """One environment, stepped by the learner through Ray (the body of SB3's subprocess worker)."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        import torch

        torch.set_num_threads(1)
        self.env = _patch_env(env_fn())

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def step(self, action: np.ndarray) -> tuple:
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict = {}
        if done:
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return observation, reward, done, info, reset_info

    def reset(self, seed: int | None, options: dict | None) -> tuple:
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    """``len(env_fns)`` environments in Ray actors, one CPU each.

    Args:
        env_fns: picklable env factories, one per environment (shipped once per actor).
        address: ``auto`` or ``HOST:PORT`` of a running cluster; None starts a local one.

    Raises:
        ExecutorError: if the address is unreachable, or an actor dies mid-run.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], address: str | None = None) -> None:
        self.closed = False
        start_ray(len(env_fns), address)
        import ray

        self._ray = ray
        actor = ray.remote(num_cpus=1, max_restarts=0)(_EnvActor)
        self.actors = [actor.remote(fn) for fn in env_fns]
        observation_space, action_space = self._get(self.actors[0].spaces.remote())
        super().__init__(len(env_fns), observation_space, action_space)
        self._pending: list | None = None

    def _get(self, refs: Any) -> Any:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return self._ray.get(refs)
        except RayTaskError as exc:
            raise exc.as_instanceof_cause() from None  # the env's own error, as with SubprocVecEnv
        except RayActorError as exc:
            raise ExecutorError(f"a Ray env actor died ({str(exc).splitlines()[0]}); the run keeps its last "
                                f"checkpoint: rerun the same command with --resume") from exc

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [a.step.remote(action) for a, action in zip(self.actors, actions)]

    def step_wait(self) -> VecEnvStepReturn:
        results, self._pending = self._get(self._pending), None
        observations, rewards, dones, infos, self.reset_infos = zip(*results)
        return _stack_obs(observations, self.observation_space), np.stack(rewards), np.stack(dones), infos

    def reset(self) -> VecEnvObs:
        results = self._get([a.reset.remote(self._seeds[i], self._options[i]) for i, a in enumerate(self.actors)])
        observations, self.reset_infos = zip(*results)
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(observations, self.observation_space)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._get([a.close.remote() for a in self.actors])
        finally:
            for a in self.actors:
                self._ray.kill(a)
            self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._get([a.render.remote() for a in self.actors])

    def _targets(self, indices: VecEnvIndices) -> list:
        return [self.actors[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._get([a.get_attr.remote(attr_name) for a in self._targets(indices)])

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._get([a.set_attr.remote(attr_name, value) for a in self._targets(indices)])

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._get([a.env_method.remote(method_name, method_args, method_kwargs) for a in self._targets(indices)])

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._get([a.is_wrapped.remote(wrapper_class) for a in self._targets(indices)])

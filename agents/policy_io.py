"""Saving and loading policies without pickled code: safetensors weights + JSON metadata.

A saved policy is a folder with ``policy.safetensors`` (the network's tensors) and
``policy.json`` (format, algorithm, network shape, the observation/action spec and env
version it was trained on, and the training record). Loading checks every one of these
against what this version of metacompress produces, so a policy for other spaces, an
older env or a corrupt file is a clear ``PolicyError``, never a silent wrong answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from metacompress._version import __version__
from metacompress.agents.encoder import UnitSetExtractor
from metacompress.envs.compression_env import ENV_VERSION, OBSERVATIONS
from metacompress.envs.features import OBSERVATION_DIM
from metacompress.errors import PolicyError

POLICY_FORMAT = 1
ACTION_DIM = 3
ALGOS = ("ppo", "recurrent_ppo")
EXTRA_FILE = "meta.safetensors"
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass(frozen=True)
class PolicyMetadata:
    """What a saved policy is and what it expects.

    Args:
        algo: ``"ppo"`` (feed-forward actor-critic) or ``"recurrent_ppo"`` (LSTM, RL^2).
        net_arch: hidden layer sizes of the actor and critic MLPs.
        activation: ``"tanh"`` or ``"relu"``.
        lstm_hidden_size: LSTM width (recurrent only).
        attempts: attempts per episode it was trained with (1 = zero-shot, K = RL^2 trial).
        method: how the weights were made: ``"ppo"``, ``"rl2"``, ``"residual"`` (PPO on the
            solver-anchored env: actions are corrections to the exact solver's plan), or a
            meta-learner of its head (``"reptile"``, ``"maml"``, ``"meta-sgd"``, ``"meta-curvature"``:
            ``agents.meta_adapt``, whose inner-loop parameters are in ``meta.safetensors``).
        observation: ``"step"`` (one unit's row, an MLP) or ``"network"`` (plus the whole
            unit table, read by ``agents.encoder.UnitSetExtractor``).
        observation_dim / action_dim / env_version: the spaces and env it was trained on.
        metacompress_version: package version that saved it.
        training: the training record (config, timesteps, seconds), for people.
    """

    algo: str
    net_arch: tuple[int, ...]
    activation: str = "tanh"
    lstm_hidden_size: int = 0
    attempts: int = 1
    method: str = "ppo"
    observation: str = "step"
    observation_dim: int = OBSERVATION_DIM
    action_dim: int = ACTION_DIM
    env_version: int = ENV_VERSION
    metacompress_version: str = __version__
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        is_count = lambda v, low: isinstance(v, int) and not isinstance(v, bool) and v >= low  # noqa: E731
        problems = []
        if self.algo not in ALGOS:
            problems.append(f"algo {self.algo!r} is not one of {', '.join(ALGOS)}")
        if not isinstance(self.net_arch, tuple) or not self.net_arch or not all(is_count(w, 1) for w in self.net_arch):
            problems.append(f"net_arch {self.net_arch!r} is not a list of positive layer widths, e.g. [128, 128]")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not is_count(self.lstm_hidden_size, 0) or not is_count(self.attempts, 1):
            problems.append(f"lstm_hidden_size {self.lstm_hidden_size!r} and attempts {self.attempts!r} must be integers >= 0 and >= 1")
        if problems:
            raise PolicyError("invalid policy description: " + "; ".join(problems) + "; re-save the policy with save_policy")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["net_arch"] = list(self.net_arch)
        return {"format": POLICY_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "PolicyMetadata":
        try:
            if data.get("format") != POLICY_FORMAT:
                raise PolicyError(f"{where} has policy format {data.get('format')!r}; this version reads {POLICY_FORMAT}")
            fields = {k: v for k, v in data.items() if k != "format"}
            arch = fields["net_arch"]
            fields["net_arch"] = tuple(arch) if isinstance(arch, list) else arch
            return cls(**fields)
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise PolicyError(f"{where} is not a metacompress policy description ({exc}); save policies with save_policy") from exc


def observation_space(observation: str = "step") -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, (OBSERVATIONS[observation],), np.float32)


def action_space() -> gym.spaces.Box:
    return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def policy_kwargs(metadata: PolicyMetadata) -> dict:
    """SB3 ``policy_kwargs`` that rebuild the network described by ``metadata``."""
    kwargs: dict = {
        "net_arch": {"pi": list(metadata.net_arch), "vf": list(metadata.net_arch)},
        "activation_fn": ACTIVATIONS[metadata.activation],
    }
    if metadata.algo == "recurrent_ppo":
        kwargs["lstm_hidden_size"] = metadata.lstm_hidden_size
    if metadata.observation == "network":
        kwargs["features_extractor_class"] = UnitSetExtractor
    return kwargs


def build_policy(metadata: PolicyMetadata) -> ActorCriticPolicy:
    """An untrained policy network of the shape ``metadata`` describes (CPU, eval mode)."""
    if metadata.algo == "recurrent_ppo":
        from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy as policy_class
    else:
        policy_class = ActorCriticPolicy
    policy = policy_class(observation_space(metadata.observation), action_space(), lambda _: 0.0, **policy_kwargs(metadata))
    return policy.eval()


def save_policy(
    policy: ActorCriticPolicy, metadata: PolicyMetadata, path: str | Path, overwrite: bool = False, extra: dict | None = None
) -> Path:
    """Write ``policy`` to the folder ``path`` atomically (never half-written; ``overwrite`` replaces only a policy).

    ``extra``: named tensors that go with the policy (a meta-learner's inner-loop
    parameters, ``agents.meta_adapt``), written to ``meta.safetensors`` and read by ``load_extra``.
    """
    from metacompress.compressors.runs import RunFolder

    tensors = _unaliased(policy)
    with RunFolder(path, "policy", overwrite).write() as tmp:
        save_file(tensors, str(tmp / "policy.safetensors"))
        if extra:
            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(tmp / EXTRA_FILE))
        (tmp / "policy.json").write_text(json.dumps(metadata.to_dict(), indent=2))
    return Path(path)


def load_policy(path: str | Path) -> tuple[ActorCriticPolicy, PolicyMetadata]:
    """Load a policy folder, checking it matches this version's spaces and env.

    Raises:
        PolicyError: if the folder is missing, corrupt, or made for other spaces or an
            older env version (the message says which and how to fix it).
    """
    folder = Path(path)
    description, weights = folder / "policy.json", folder / "policy.safetensors"
    if not description.exists() or not weights.exists():
        raise PolicyError(f"{folder} is not a saved policy (needs policy.json and policy.safetensors); train one with `metacompress train`")
    try:
        metadata = PolicyMetadata.from_dict(json.loads(description.read_text()), str(description))
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{description} is corrupt ({exc}); re-save or retrain the policy") from exc
    problems = []
    expected = OBSERVATIONS.get(metadata.observation)
    if expected is None:
        problems.append(f"its observation kind {metadata.observation!r} is unknown (this version has {', '.join(OBSERVATIONS)})")
    elif metadata.observation_dim != expected or metadata.action_dim != ACTION_DIM:
        problems.append(
            f"it expects observations of {metadata.observation_dim} and actions of {metadata.action_dim} "
            f"values, this version has {expected} and {ACTION_DIM}"
        )
    if metadata.env_version != ENV_VERSION:
        problems.append(f"it was trained on env version {metadata.env_version}, this is version {ENV_VERSION}")
    if problems:
        raise PolicyError(f"policy {folder} does not fit this metacompress: {'; '.join(problems)}. Retrain it with `metacompress train`.")
    state = read_tensors(weights, "re-save or retrain the policy")
    policy = build_policy(metadata)
    expected = _unaliased(policy)
    try:
        if set(state) != set(expected):
            raise RuntimeError(f"tensor names differ: {sorted(set(state) ^ set(expected))[:4]}")
        policy.load_state_dict(state, strict=False)  # the aliases of shared modules load through their first name
    except RuntimeError as exc:
        raise PolicyError(f"{weights} does not match the network in {description.name} ({str(exc).splitlines()[0]}); re-save the policy") from exc
    return policy, metadata


def load_extra(path: str | Path) -> dict:
    """The extra tensors saved with a policy (``save_policy(extra=...)``); empty if it has none.

    Raises:
        PolicyError: if the file is corrupt.
    """
    file = Path(path) / EXTRA_FILE
    if not file.exists():
        return {}
    return read_tensors(file, "re-save or retrain the policy")


def read_tensors(file: Path, fix: str) -> dict:
    """The tensors of a safetensors ``file``.

    Raises:
        PolicyError: naming the file and ``fix`` if it is unreadable or corrupt.
    """
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PolicyError(f"{file} is corrupt ({exc}); {fix}") from exc


def _unaliased(policy: ActorCriticPolicy) -> dict:
    """The state dict with each shared tensor once, under its first name.

    SB3 keeps ``features_extractor`` and ``pi_features_extractor`` as one module under two
    names; safetensors refuses to store a tensor twice.
    """
    tensors, seen = {}, set()
    for name, value in policy.state_dict().items():
        if value.data_ptr() in seen and value.numel():
            continue
        seen.add(value.data_ptr())
        tensors[name] = value.detach().cpu().contiguous()
    return tensors

"""Policy files: round trip, and clear errors for corrupt or mismatched ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metacompress.agents.policy_io import PolicyMetadata, build_policy, load_policy, save_policy
from metacompress.envs.features import OBSERVATION_DIM
from metacompress.errors import PolicyError, RunExists


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(32, 32))
    policy = build_policy(metadata)
    return policy, save_policy(policy, metadata, tmp_path / "policy")


def test_round_trip_gives_identical_actions(saved):
    policy, path = saved
    loaded, metadata = load_policy(path)
    obs = np.random.default_rng(0).uniform(-1, 1, (5, OBSERVATION_DIM)).astype(np.float32)
    assert np.array_equal(policy.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert metadata.net_arch == (32, 32) and metadata.observation_dim == OBSERVATION_DIM


def test_recurrent_round_trip(tmp_path):
    metadata = PolicyMetadata(algo="recurrent_ppo", net_arch=(16,), lstm_hidden_size=8, attempts=3, method="rl2")
    save_policy(build_policy(metadata), metadata, tmp_path / "rl2")
    _, loaded = load_policy(tmp_path / "rl2")
    assert loaded.lstm_hidden_size == 8 and loaded.attempts == 3


def test_corrupt_weights_are_a_clear_error(saved):
    _, path = saved
    (path / "policy.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PolicyError, match="corrupt"):
        load_policy(path)


def test_corrupt_description_is_a_clear_error(saved):
    _, path = saved
    (path / "policy.json").write_text("{ nope")
    with pytest.raises(PolicyError, match="corrupt"):
        load_policy(path)


def test_policy_for_other_spaces_or_env_version_is_refused(saved):
    _, path = saved
    description = json.loads((path / "policy.json").read_text())
    description.update(observation_dim=OBSERVATION_DIM + 4, env_version=0)
    (path / "policy.json").write_text(json.dumps(description))
    with pytest.raises(PolicyError, match=r"expects observations of .* env version 0.*Retrain"):
        load_policy(path)


@pytest.mark.parametrize(
    "change, message",
    [({"activation": "gelu"}, "activation 'gelu' is not one of tanh, relu"),
     ({"net_arch": 64}, "net_arch 64 is not a list of positive layer widths"),
     ({"net_arch": ["a", 0]}, r"net_arch \('a', 0\) is not a list"),
     ({"algo": "a2c"}, "algo 'a2c' is not one of ppo, recurrent_ppo")],
    ids=["unknown-activation", "net-arch-int", "net-arch-strings", "unknown-algo"],
)
def test_malformed_description_is_a_policy_error(saved, change, message):
    """Issue 13 item 8: these escaped as KeyError / TypeError tracebacks from SB3."""
    _, path = saved
    description = json.loads((path / "policy.json").read_text())
    (path / "policy.json").write_text(json.dumps({**description, **change}))
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_weights_of_another_network_are_refused(saved, tmp_path):
    _, path = saved
    other = PolicyMetadata(algo="ppo", net_arch=(64,))
    save_policy(build_policy(other), other, tmp_path / "other")
    (path / "policy.safetensors").write_bytes((tmp_path / "other" / "policy.safetensors").read_bytes())
    with pytest.raises(PolicyError, match="does not match the network"):
        load_policy(path)


def test_missing_folder_and_existing_output(saved, tmp_path):
    policy, path = saved
    with pytest.raises(PolicyError, match="not a saved policy"):
        load_policy(tmp_path / "nothing")
    with pytest.raises(RunExists):
        save_policy(policy, PolicyMetadata(algo="ppo", net_arch=(32, 32)), path)

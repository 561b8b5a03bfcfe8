"""Training runs: folder contents, refusal to overwrite, and resume after an interruption."""

from __future__ import annotations

import json

import pytest

from metacompress.agents import training
from metacompress.agents.policy_io import load_policy
from metacompress.agents.training import TrainConfig, latest_checkpoint, train
from metacompress.errors import MetacompressError, RunExists, RunInterrupted

CONFIG = TrainConfig(
    timesteps=96, n_steps=32, batch_size=32, n_epochs=2, n_envs=1, vec_env="dummy", models=("mlp-w64-d1-digits",),
    net_arch=(16,), eval_tasks=0, checkpoint_every=32, search_finetune_steps=0,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


class Interrupt(training._Checkpointer):
    """Saves its first checkpoint, then stops the run as a Ctrl-C would."""

    def _on_rollout_start(self) -> None:
        saved = self._next
        super()._on_rollout_start()
        if self._next != saved:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_checkpoint(cache, monkeypatch):
    out = cache / "run"
    original = training._Checkpointer
    monkeypatch.setattr(training, "_Checkpointer", Interrupt)
    with pytest.raises(RunInterrupted, match="keeps its checkpoint at 32 steps.*--resume"):
        train(CONFIG, out, progress=False)
    first = latest_checkpoint(out / "checkpoints")
    assert first is not None and first.name == "ckpt-000000032.pt"
    assert not (out / "policy").exists()  # no half-written policy
    monkeypatch.setattr(training, "_Checkpointer", original)
    result = train(CONFIG, out, resume=True, progress=False)
    assert result.timesteps == CONFIG.timesteps
    _, metadata = load_policy(result.policy_path)
    assert metadata.training["timesteps"] == CONFIG.timesteps and metadata.method == "ppo"
    assert json.loads((out / "config.json").read_text())["config"]["timesteps"] == CONFIG.timesteps


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(cache):
    out = cache / "run"
    out.mkdir()
    with pytest.raises(RunExists, match="--resume"):
        train(CONFIG, out, progress=False)
    with pytest.raises(MetacompressError, match="not a metacompress train run"):
        train(CONFIG, out, resume=True, progress=False)


def test_invalid_config_is_reported_in_one_error():
    with pytest.raises(MetacompressError, match="algo 'nope' is unknown.*vec_env 'x'"):
        TrainConfig(algo="nope", vec_env="x")

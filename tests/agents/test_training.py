"""Training runs: folder contents, refusal to overwrite, and resume after an interruption."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from metacompress.agents import training
from metacompress.agents.checkpoints import latest_checkpoint
from metacompress.agents.policy_io import load_policy
from metacompress.agents.train_config import TrainConfig
from metacompress.agents.training import train
from metacompress.errors import CorruptFile, MetacompressError, RunExists, RunInterrupted

CONFIG = TrainConfig(
    timesteps=96, n_steps=32, batch_size=32, n_epochs=2, n_envs=1, vec_env="dummy", models=("mlp-w64-d1-digits",),
    net_arch=(16,), eval_tasks=0, checkpoint_every=32, search_finetune_steps=0,
)


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory):
    """One zoo cache for the module: the mlp is trained once, not per test."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("METACOMPRESS_CACHE", str(path))
        yield path


@pytest.fixture
def cache(zoo_cache, tmp_path):
    return tmp_path


class StopAtStart(training.Checkpointer):
    """Stops the run as a Ctrl-C would, before its first checkpoint."""

    def _on_step(self) -> bool:
        raise KeyboardInterrupt


class Interrupt(training.Checkpointer):
    """Saves its first checkpoint, then stops the run as a Ctrl-C would."""

    def _on_rollout_start(self) -> None:
        saved = self._next
        super()._on_rollout_start()
        if self._next != saved:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_checkpoint(cache, monkeypatch):
    out = cache / "run"
    original = training.Checkpointer
    monkeypatch.setattr(training, "Checkpointer", Interrupt)
    with pytest.raises(RunInterrupted, match="keeps its checkpoint at 32 steps.*--resume"):
        train(CONFIG, out, progress=False)
    first = latest_checkpoint(out / "checkpoints")
    assert first is not None and first.name == "ckpt-000000032.pt"
    assert not (out / "policy").exists()  # no half-written policy
    monkeypatch.setattr(training, "Checkpointer", original)
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


def names(folder) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").iterdir())


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(cache, monkeypatch):
    """Issue 13 item 2: --overwrite deleted the old run at start-up; Ctrl-C then lost both."""
    out = cache / "run"
    train(CONFIG, out, progress=False)
    before = names(out)
    monkeypatch.setattr(training, "Checkpointer", StopAtStart)
    with pytest.raises(RunInterrupted, match="before its first checkpoint; nothing was written to .*untouched"):
        train(CONFIG, out, overwrite=True, progress=False)
    assert names(out) == before and (out / "policy" / "policy.json").exists()
    assert [p.name for p in cache.iterdir()] == ["run"]  # no temporary folder left


def test_overwrite_refuses_a_folder_that_is_not_a_train_run(cache):
    """Issue 13 item 1: train --overwrite deleted any folder."""
    out = cache / "thesis"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(RunExists, match="not a metacompress run"):
        train(CONFIG, out, overwrite=True, progress=False)
    assert (out / "notes.md").read_text() == "mine"


def test_resume_after_interrupt_ends_where_an_uninterrupted_run_ends(cache, monkeypatch):
    """Issue 13 item 9: a mid-rollout checkpoint made the resumed run end early (6,096 of 6,144 steps),
    a spurious checkpoint appeared at the resume, and resuming a finished run trained and logged again."""
    config = replace(CONFIG, timesteps=80, checkpoint_every=20)  # rollouts of 32 steps: 96 in all
    assert train(config, cache / "whole", progress=False).timesteps == 96
    original = training.Checkpointer
    monkeypatch.setattr(training, "Checkpointer", Interrupt)
    out = cache / "run"
    with pytest.raises(RunInterrupted, match="checkpoint at 32 steps"):
        train(config, out, progress=False)
    monkeypatch.setattr(training, "Checkpointer", original)
    result = train(config, out, resume=True, progress=False)
    assert (result.timesteps, result.trained) == (96, 64)
    assert names(out) == names(cache / "whole") == ["ckpt-000000032.pt", "ckpt-000000064.pt", "ckpt-000000096.pt"]
    (out / "metrics.csv").write_text("timesteps\n96\n")
    again = train(config, out, resume=True, progress=False)
    assert (again.timesteps, again.trained) == (96, 0)
    assert (out / "metrics.csv").read_text() == "timesteps\n96\n" and len(names(out)) == 3


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_malicious_checkpoint_is_refused_with_a_clear_error(cache, monkeypatch):
    """Issue 13 item 8: weights_only blocked the payload, but with a traceback."""
    out = cache / "run"
    monkeypatch.setattr(training, "Checkpointer", Interrupt)
    with pytest.raises(RunInterrupted):
        train(CONFIG, out, progress=False)
    torch.save({"policy": _Payload()}, latest_checkpoint(out / "checkpoints"))
    monkeypatch.undo()
    with pytest.raises(CorruptFile, match="ckpt-000000032.pt cannot be loaded safely .*delete it to resume from the one before"):
        train(CONFIG, out, resume=True, progress=False)


def test_cli_train_with_a_config_file_then_resume_a_finished_run(cache, capsys):
    """`train --resume` on a finished run said it trained 6,144 steps again; --config sets TrainConfig fields."""
    from metacompress.cli import main

    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(CONFIG).items() if k not in ("algo", "seed", "split")}
    (cache / "tiny.json").write_text(json.dumps(fields))
    argv = ["train", "--config", str(cache / "tiny.json"), "--no-progress", "--out", str(cache / "run")]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("trained 96 steps in")
    assert main(argv + ["--resume"]) == 0
    assert capsys.readouterr().out.startswith(f"{cache / 'run'} is already complete at 96 steps; nothing to train")
    (cache / "tiny.json").write_text(json.dumps({"timestep": 5}))
    assert main(argv) == 2
    assert "unknown: ['timestep']" in capsys.readouterr().err


def test_recipes_are_named_configs():
    assert TrainConfig.recipe("quick").timesteps == 6_000 and TrainConfig.recipe("quick", "rl2").n_envs == 2
    assert (TrainConfig.recipe("default", "rl2").timesteps, TrainConfig.recipe("default", "rl2").attempts) == (60_000, 8)
    with pytest.raises(MetacompressError, match="recipe 'fast' is unknown; use one of default, quick"):
        TrainConfig.recipe("fast")


def test_rollouts_on_ray_actors_train_the_policy_dummy_envs_train(cache, ray_cluster):
    config = replace(CONFIG, n_envs=2, timesteps=64)
    local = train(config, cache / "dummy", progress=False)
    on_ray = train(replace(config, vec_env="ray"), cache / "ray", progress=False)
    weights = [load_policy(result.policy_path)[0].state_dict() for result in (local, on_ray)]
    assert on_ray.timesteps == local.timesteps == 64 and latest_checkpoint(cache / "ray" / "checkpoints") is not None
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

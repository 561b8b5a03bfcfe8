"""Shared fixtures: tiny models of every architecture, built fresh per test."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_MODELS, example_input, trained_like
from tiny_world import tiny_loader

from metacompress.envs.world import TaskWorld


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=sorted(TINY_MODELS), ids=sorted(TINY_MODELS))
def tiny(request):
    """(family name, model, a batch of 32 inputs) for each architecture family."""
    model = trained_like(TINY_MODELS[request.param]())
    return request.param, model, example_input(model, batch=32)


def pytest_configure(config):
    # one thread: steady timings, no oversubscription when tests run beside other work
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TaskWorld:
    """Tasks named by tiny model families ("resnet", "mlp", ...) on synthetic data."""
    return TaskWorld(tmp_path_factory.mktemp("world"), search_finetune_steps=0, model_loader=tiny_loader)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster (2 CPUs) for every Ray test, started here and shut down at the end.

    The tests folder goes on the workers' PYTHONPATH, so they unpickle the tiny test models.
    """
    import os
    from pathlib import Path

    from metacompress.envs.executor import start_ray

    tests = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    import ray

    start_ray(workers=2)
    yield ray
    ray.shutdown()

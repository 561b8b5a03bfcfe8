"""The executor seam: every backend gives the in-process numbers; bad input and dead workers are errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import torch

from metacompress.agents import EvolutionPlanner, RandomSearchPlanner, UniformPlanner, rollout
from metacompress.agents.policy_io import PolicyMetadata, build_policy
from metacompress.agents.residual import EXPLORATION_SCALE, FEW_SHOT_NOISE, ResidualFewShotPlanner
from metacompress.compressors.budget import Budget
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.features import NETWORK_OBSERVATION_DIM
from metacompress.envs.executor import InProcessExecutor, ProcessExecutor, RayExecutor, check_reachable, make_executor
from metacompress.envs.tasks import Task
from metacompress.envs.world import TaskWorld
from metacompress.errors import ExecutorError
from tiny_world import tiny_loader

TASK = Task("resnet", "bismo-edge", Budget("bitops", 0.2))
def residual_few_shot() -> ResidualFewShotPlanner:
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(16,), method="residual", observation="network",
                              observation_dim=NETWORK_OBSERVATION_DIM)
    return ResidualFewShotPlanner(build_policy(metadata), metadata)


PLANNERS = [RandomSearchPlanner(), EvolutionPlanner(population=4), UniformPlanner(), residual_few_shot()]


def plan_all(tmp_path: Path, executor) -> list[tuple]:
    """Each planner's (plan key, proxy change, evaluations used) on a fresh world using ``executor``."""
    context = TaskWorld(tmp_path / "world", search_finetune_steps=0, model_loader=tiny_loader).context(TASK)
    context.evaluator.executor = executor
    results = []
    for planner in PLANNERS:
        context.evaluator.clear_cache()
        before = context.evaluator.stats.evaluations
        result = planner.plan(context, 6, seed=3)
        results.append((result.plan.key(), result.proxy_change, result.evaluations_used, result.info["history"],
                        context.evaluator.stats.evaluations - before))
    return results


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> list[tuple]:
    return plan_all(tmp_path_factory.mktemp("inprocess"), InProcessExecutor())


def test_a_shipped_evaluator_scores_plans_as_the_original(tmp_path, in_process):
    context = TaskWorld(tmp_path, search_finetune_steps=2, model_loader=tiny_loader).context(TASK)
    weights = {k: v.clone() for k, v in context.evaluator.model.state_dict().items()}
    rebuilt = context.evaluator.shipment().build()
    env = CompressionEnv(context)
    plans = [env.plan_of(np.full((len(context.decision_units), 3), v, np.float32)) for v in (-0.5, 0.0, 0.7)]
    assert [rebuilt.proxy_accuracy(p) for p in plans] == [context.evaluator.proxy_accuracy(p) for p in plans]
    assert all((context.evaluator.model.state_dict()[k] == v).all() for k, v in weights.items())  # model untouched


def test_policy_rollouts_drawn_as_a_batch_score_what_one_at_a_time_scores(tiny_world):
    planner, context = residual_few_shot(), tiny_world.context(TASK)
    context.evaluator.clear_cache()
    batched = planner.plan(context, 6, seed=1)
    _, _, book = planner._opening(context, 6)
    rng = np.random.default_rng(1)
    while not book.exhausted:  # the loop run_actors replaced
        plan, change, _ = rollout(book.env, planner._actor(FEW_SHOT_NOISE, rng, EXPLORATION_SCALE))
        book.record(plan, change)
    assert book.history == batched.info["history"] and len(book.history) == 6 and book.best[1] == batched.plan


def test_a_process_pool_gives_the_in_process_plans(tmp_path, in_process):
    executor = ProcessExecutor(2)
    try:
        assert plan_all(tmp_path, executor) == in_process
    finally:
        executor.close()


def test_ray_gives_the_in_process_plans(tmp_path, in_process, ray_cluster):
    assert plan_all(tmp_path, RayExecutor(2)) == in_process


def _die_once(marker: str, item: int) -> int:
    if item == 1 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker process dies mid-task
    return item * 10


def _always_die(_, item: int) -> int:
    os._exit(1)


class _Marker:
    """A shipment whose worker state is a marker file's path."""

    def __init__(self, path: Path) -> None:
        self.token, self.path = f"marker-{path}", str(path)

    def build(self) -> str:
        return self.path


def test_ray_retries_a_worker_that_dies_and_reports_one_that_keeps_dying(tmp_path, ray_cluster):
    import sys

    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    executor = RayExecutor(2)
    assert executor.map(_die_once, [0, 1, 2], _Marker(tmp_path / "died")) == [0, 10, 20]
    assert (tmp_path / "died").exists()  # it did die once, and the retry's result came back
    with pytest.raises(ExecutorError, match="item 0 of 1 failed on Ray after 2 retries"):
        executor.map(_always_die, [0])


def test_an_unreachable_ray_address_is_a_quick_clear_error():
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(ExecutorError, match=f"no Ray head answers at 127.0.0.1:{port} within 3 s"):
        make_executor("ray", 2, f"127.0.0.1:{port}")
    with pytest.raises(ExecutorError, match="not HOST:PORT"):
        make_executor("ray", 2, "nowhere")
    assert time.perf_counter() - start < 5


def test_bad_executor_settings_are_reported_together():
    with pytest.raises(ExecutorError, match="'gpu' is unknown.*--workers 0 must be.*needs --executor ray"):
        make_executor("gpu", 0, "auto")


@pytest.mark.parametrize("command", [["train"], ["apply"], ["bench", "agents", "--dry-run"]], ids=["train", "apply", "bench"])
def test_every_command_refuses_an_unreachable_ray_address_before_any_work(command, tmp_path, capsys):
    import socket

    from metacompress.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    code = main([*command, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")])
    assert code == 2 and f"no Ray head answers at 127.0.0.1:{port}" in capsys.readouterr().err
    assert time.perf_counter() - start < 10 and not (tmp_path / "run").exists()


def test_a_zoo_built_on_a_process_pool_is_byte_identical_and_cached_here(tmp_path):
    from metacompress.envs.zoo.cache import build_zoo
    from metacompress.envs.zoo.catalog import ZooEntry

    recipe = {"width": 8, "depth": 1, "epochs": 2, "batch_size": 32, "lr": 1e-2, "max_train_samples": 128}
    entries = [ZooEntry("tiny-a", "mlp", "digits", **recipe), ZooEntry("tiny-b", "mlp", "digits", seed=1, **recipe)]
    here = build_zoo(entries, tmp_path / "here", progress=False)
    executor = ProcessExecutor(2)
    try:
        pooled = build_zoo(entries, tmp_path / "pool", progress=False, executor=executor)
    finally:
        executor.close()
    assert [r.sha256 for r in pooled] == [r.sha256 for r in here] and len({r.sha256 for r in here}) == 2
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["tiny-a.json", "tiny-a.safetensors", "tiny-b.json", "tiny-b.safetensors"]


class _CountingPool(ProcessExecutor):
    """A process pool that counts the items it was given."""

    items = 0

    def map(self, fn, items, *args, **kwargs) -> list:
        self.items += len(items)
        return super().map(fn, items, *args, **kwargs)


def test_probes_run_on_the_evaluators_pool_and_equal_the_in_process_probes():
    from metacompress.envs.evaluator import ModelEvaluator
    from metacompress.envs.probes import compute_probes

    model, data = tiny_loader("resnet")
    in_process_progress, pooled_progress = [], []
    in_process = compute_probes(ModelEvaluator(model, data), progress=lambda *done: in_process_progress.append(done))
    pooled_evaluator, executor = ModelEvaluator(model, data), _CountingPool(2)
    try:
        pooled_evaluator.executor = executor
        pooled = compute_probes(pooled_evaluator, progress=lambda *done: pooled_progress.append(done))
    finally:
        executor.close()
    assert pooled == in_process
    total = executor.items
    assert in_process_progress == pooled_progress == [(done, total) for done in range(total + 1)]  # one call per evaluation
    assert executor.items == 4 * sum(not unit.frozen for unit in pooled_evaluator.spec.units) > 0  # every probe ran there
    assert any(unit.drop_w2 < 0 for unit in pooled.units)  # the probes measured something


USER_FILE = '''
import torch
from torch import nn
import metacompress as mc


class UserNet(nn.Module):  # a class no worker process can import: it lives in the user's file
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def factory():
    torch.manual_seed(0)
    model = UserNet().eval()
    x = torch.randn(120, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, mc.splits_from_arrays(x, y)


def agreement(outputs, targets):
    return float((outputs.argmax(1) == targets).float().mean())
'''


def test_a_model_and_metric_from_a_users_file_are_scored_on_a_process_pool(tmp_path):
    from metacompress.compressors.metrics import resolve_metric
    from metacompress.compressors.plan import Plan
    from metacompress.envs.evaluator import ModelEvaluator
    from metacompress.sources import load_function, load_model_source

    path = tmp_path / "user_model.py"
    path.write_text(USER_FILE)
    model, data, _ = load_model_source(f"{path}:factory")
    metric = load_function(f"{path}:agreement")
    evaluator = ModelEvaluator(model, data, metric=resolve_metric(metric))
    plans = [Plan.uniform(evaluator.spec, prune=p, w_bits=w, a_bits=w) for p, w in ((0.0, 2), (0.5, 4))]
    expected = [evaluator.proxy_accuracy(plan) for plan in plans]
    evaluator.clear_cache()
    executor = ProcessExecutor(2)
    try:
        evaluator.executor = executor
        assert evaluator.proxy_accuracies(plans) == expected  # v0.9: the workers could not unpickle UserNet
    finally:
        executor.close()

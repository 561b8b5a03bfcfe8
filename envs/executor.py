"""The executor seam: where many independent evaluations run (DESIGN.md section 8).

Evaluations are the cost of every search, so everything that scores many plans at once
(``ModelEvaluator.proxy_accuracies``, hence ``ScoreBook.run_batch`` and the planners that
batch; ``bench agents`` runs) maps a function over items through one ``Executor``:

- ``InProcessExecutor`` (the default): a plain loop, no copies.
- ``ProcessExecutor``: a local spawn-process pool of ``workers``.
- ``RayExecutor``: Ray remote tasks on a local or remote cluster (``address``), retried
  by Ray when a worker process dies (``max_retries``); a result that still fails is an
  ``ExecutorError`` naming the item, never a silently missing row.

What a map needs besides its items (a model and its data) is a ``Shipment``: a picklable
recipe with a ``token`` and a ``build()`` that makes the worker-side state (an evaluator).
It is shipped once per worker, not per call: the process pool passes it to each worker's
initializer; Ray ``ray.put``s it once into the object store (numpy arrays in it are read
zero-copy by every worker on a node) and each worker process builds its state once per
token and keeps it. The function mapped is ``fn(state, item) -> result``; results come back
in item order, so a seeded caller gets the same numbers on every backend.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

from metacompress.errors import ExecutorError

BACKENDS = ("inprocess", "process", "ray")
CONNECT_TIMEOUT_S = 3.0
RAY_MAX_RETRIES = 2
# A small object store and a short temp path make a local Ray start on a loaded 2-core box
# (the default store takes 30% of RAM; a deep temp path overflows the 107-byte socket limit).
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2
LOCAL_TEMP_DIR = "/tmp/mc-ray"

Item = TypeVar("Item")
Result = TypeVar("Result")


@runtime_checkable
class Shipment(Protocol):
    """What every worker needs once: ``token`` names it, ``build()`` makes the worker's state."""

    token: str

    def build(self) -> Any: ...


@dataclass(frozen=True)
class Nothing:
    """The empty shipment, for maps whose items carry everything."""

    token: str = "nothing"

    def build(self) -> None:
        return None


# Worker-side state, one entry per shipment token, kept for the worker process's life.
_STATE: dict[str, Any] = {}


def _state_of(shipment: Shipment) -> Any:
    if shipment.token not in _STATE:
        _STATE[shipment.token] = shipment.build()
    return _STATE[shipment.token]


class Executor(Protocol):
    """Maps ``fn(state, item)`` over items; ``state`` is the shipment's, built once per worker."""

    backend: str
    workers: int

    def map(self, fn: Callable[[Any, Item], Result], items: Sequence[Item], shipment: Shipment = Nothing(),
            on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
        """Results in item order; ``on_result(i, result)`` is called here as item ``i`` finishes."""
        ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Runs every item here, in order; the shipment is built once per token and kept."""

    backend = "inprocess"
    workers = 1

    def __init__(self) -> None:
        self._state: dict[str, Any] = {}

    def map(self, fn, items, shipment: Shipment = Nothing(), on_result=None) -> list:
        if shipment.token not in self._state:
            self._state[shipment.token] = shipment.build()
        results = []
        for i, item in enumerate(items):
            results.append(fn(self._state[shipment.token], item))
            if on_result is not None:
                on_result(i, results[-1])
        return results

    def close(self) -> None:
        self._state.clear()


def _init_process(shipment: Shipment) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: workers x threads must not oversubscribe
    _state_of(shipment)


def _call_with_state(fn: Callable, shipment_token: str, item: Any) -> Any:
    return fn(_STATE[shipment_token], item)


class ProcessExecutor:
    """A local pool of ``workers`` spawned processes; a new shipment token starts a new pool.

    Raises ``ExecutorError`` if a worker process dies (the pool cannot say which item it held).
    """

    backend = "process"

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._token: str | None = None

    def _pool_for(self, shipment: Shipment) -> ProcessPoolExecutor:
        if self._token != shipment.token:
            self.close()
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_process,
                                             initargs=(shipment,))
            self._token = shipment.token
        return self._pool

    def map(self, fn, items, shipment: Shipment = Nothing(), on_result=None) -> list:
        pool = self._pool_for(shipment)
        futures = {pool.submit(_call_with_state, fn, shipment.token, item): i for i, item in enumerate(items)}
        results: dict[int, Any] = {}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[futures[future]] = future.result()
                    if on_result is not None:
                        on_result(futures[future], results[futures[future]])
        except BrokenProcessPool as exc:
            self.close()
            raise ExecutorError(f"a worker process died; {len(items) - len(results)} of {len(items)} results are lost. "
                                f"Rerun, or use --executor ray, which retries a dead worker's task") from exc
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._token = None, None


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ExecutorError`` unless ``HOST:PORT`` accepts a TCP connection within ``timeout_s``.

    Checked before ``ray.init``, which otherwise retries an unreachable head for minutes.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--ray-address {address!r} is not HOST:PORT or 'auto'; e.g. 10.0.0.5:6379 "
                            f"(the address `ray start --head` prints)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorError(f"no Ray head answers at {address} within {timeout_s:.0f} s ({exc}); start one there with "
                            f"`ray start --head --port {port}`, or check the address and firewall") from exc


def start_ray(workers: int, address: str | None = None) -> None:
    """Connect to the cluster at ``address`` (``auto`` or HOST:PORT), or start a small local one.

    Raises:
        ExecutorError: if the address is malformed or unreachable, or ``auto`` finds no cluster.
    """
    if address not in (None, "auto"):
        check_reachable(address)
    import ray

    if ray.is_initialized():
        return
    try:
        if address is None:
            os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a loaded box starts the raylet slowly
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, _temp_dir=LOCAL_TEMP_DIR)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise ExecutorError(f"cannot join the Ray cluster at --ray-address {address}: {exc}. Start one with "
                            f"`ray start --head` (auto finds a head started on this machine)") from exc


def _ray_call(fn: Callable, shipment: Shipment, item: Any) -> Any:
    import torch

    torch.set_num_threads(1)
    return fn(_state_of(shipment), item)


class RayExecutor:
    """Ray remote tasks; the shipment is ``ray.put`` once per token and built once per worker process.

    Args:
        workers: tasks in flight at once (and the CPUs of a local cluster this starts); on a
            cluster, its CPU count uses it all.
        address: ``auto``, ``HOST:PORT``, or None to start a local cluster in this process.
        max_retries: times Ray reruns a task whose worker process died.
    """

    backend = "ray"

    def __init__(self, workers: int, address: str | None = None, max_retries: int = RAY_MAX_RETRIES) -> None:
        start_ray(workers, address)
        import ray

        self.workers = int(workers)
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_ray_call)
        self._refs: dict[str, Any] = {}

    def map(self, fn, items, shipment: Shipment = Nothing(), on_result=None) -> list:
        import ray
        from ray.exceptions import RayError, RayTaskError

        if shipment.token not in self._refs:
            self._refs = {shipment.token: ray.put(shipment)}  # one shipment in the store at a time
        ref = self._refs[shipment.token]
        # at most ``workers`` tasks in flight: a cluster shared with other jobs is not flooded,
        # and ``workers`` means what it says on a local cluster with more CPUs
        queue = list(enumerate(items))
        index: dict[Any, int] = {}
        results: dict[int, Any] = {}
        while queue or index:
            while queue and len(index) < self.workers:
                i, item = queue.pop(0)
                index[self._remote.remote(fn, ref, item)] = i
            done, _ = ray.wait(list(index), num_returns=1)
            i = index.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except RayTaskError as exc:
                raise exc.as_instanceof_cause() from None  # the task's own error, as in-process
            except RayError as exc:
                for f in index:
                    ray.cancel(f, force=True)
                raise ExecutorError(f"item {i} of {len(items)} failed on Ray after {RAY_MAX_RETRIES} retries "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0]}); no partial result is "
                                    f"returned. Check the workers' logs (ray logs) and memory") from exc
            if on_result is not None:
                on_result(i, results[i])
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        self._refs.clear()


def make_executor(backend: str = "inprocess", workers: int = 1, address: str | None = None) -> Executor:
    """The executor a ``--executor``/``--workers``/``--ray-address`` triple asks for.

    Raises:
        ExecutorError: naming every bad setting (checked before anything starts).
    """
    problems = executor_problems(backend, workers, address)
    if problems:
        raise ExecutorError("; ".join(problems))
    if backend == "process":
        return ProcessExecutor(workers)
    if backend == "ray":
        return RayExecutor(workers, address)
    return InProcessExecutor()


def executor_problems(backend: str, workers: int, address: str | None) -> list[str]:
    """Every problem with executor settings, each with its fix (empty if they are fine); starts nothing."""
    problems = []
    if backend not in BACKENDS:
        problems.append(f"--executor {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        problems.append(f"--workers {workers!r} must be an integer >= 1")
    if address is not None and backend != "ray":
        problems.append(f"--ray-address needs --executor ray (got --executor {backend})")
    return problems


def timed(fn: Callable[[Any, Item], Result]) -> Callable[[Any, Item], tuple[Result, float]]:
    """Wrap ``fn`` to also return its own seconds (what a worker spent, without the transport)."""
    return _Timed(fn)


@dataclass(frozen=True)
class _Timed:
    fn: Callable

    def __call__(self, state: Any, item: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        return self.fn(state, item), time.perf_counter() - start

"""The ``--executor``, ``--workers`` and ``--ray-address`` flags every scalable command shares.

One helper, so ``bench``, ``apply --few-shot``, ``train`` and ``zoo build`` read the same
flags the same way (``envs.executor`` says what each backend does).
"""

from __future__ import annotations

import argparse

from metacompress.envs.executor import BACKENDS, Executor, executor_problems, make_executor
from metacompress.errors import ExecutorError


def add_executor_flags(parser: argparse.ArgumentParser, workers_help: str = "workers (default 1)") -> None:
    """Add the three flags to ``parser`` (defaults None: the command's own default applies)."""
    group = parser.add_argument_group("where evaluations run")
    group.add_argument("--executor", choices=BACKENDS, default=None,
                       help="inprocess (default), process (a local process pool) or ray (a Ray cluster; see README "
                            "'Scaling out on Ray')")
    group.add_argument("--workers", type=int, default=None, help=workers_help)
    group.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                       help="join a running Ray cluster: auto (one started on this machine with `ray start`) or the "
                            "head's HOST:PORT (default: start a local Ray for this command)")


def check_executor_flags(args: argparse.Namespace, default_workers: int = 1) -> None:
    """Raise ``ExecutorError`` for bad executor flags, before any expensive step."""
    problems = executor_problems(_backend(args), _workers(args, default_workers), args.ray_address)
    if problems:
        raise ExecutorError("; ".join(problems))


def executor_from(args: argparse.Namespace, default_workers: int = 1) -> Executor:
    """The executor the flags ask for (``--ray-address`` alone implies ``--executor ray``)."""
    return make_executor(_backend(args), _workers(args, default_workers), args.ray_address)


def _backend(args: argparse.Namespace) -> str:
    return args.executor or ("ray" if args.ray_address else "inprocess")


def _workers(args: argparse.Namespace, default_workers: int) -> int:
    return args.workers if args.workers is not None else default_workers

"""The ``metacompress`` command line: one subcommand group per module in ``commands/``.

Each command module exposes ``register(subparsers)``; its handlers parse flags, call the
public Python API and print results. They hold no logic the API lacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metacompress._version import __version__
from metacompress.errors import MetacompressError

COMMAND_MODULES = ("apply", "bench", "hardware", "inspect", "suite", "train", "zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metacompress",
        description="Learned, hardware-aware compression of PyTorch models (pruning + mixed precision).",
    )
    parser.add_argument("--version", action="version", version=f"metacompress {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"metacompress.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error prints its message and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except MetacompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

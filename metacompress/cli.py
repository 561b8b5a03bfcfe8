"""The ``metacompress`` command line: one subcommand group per module in ``commands/``.

Each command module exposes ``register(subparsers)``; its handlers parse flags, call the
public Python API and print results. They hold no logic the API lacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from metacompress._version import __version__
from metacompress.errors import MetacompressError

COMMAND_MODULES = ("apply", "bench", "export", "hardware", "inspect", "suite", "train", "zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metacompress",
        description="Learned, hardware-aware compression of PyTorch models (pruning + mixed precision).",
    )
    parser.add_argument("--version", action="version", version=f"metacompress {__version__}")
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"metacompress.commands.{name}").register(subparsers)
    _accept_quiet_anywhere(subparsers)
    return parser


QUIET_HELP = "print warnings and results only, not progress lines (stderr)"


def _accept_quiet_anywhere(subparsers: argparse._SubParsersAction) -> None:
    """``--quiet`` after the command too (``metacompress apply ... --quiet``), as users type it.

    Absent there, it leaves the value given before the command (``SUPPRESS``: no default).
    """
    for command in subparsers.choices.values():
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_quiet_anywhere(action)


EXIT_USAGE = 2  # bad input or configuration: one ``error:`` line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader (``| head``) stopped reading, as ``cat`` would report


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error prints its message and exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_progress(not args.quiet)
    try:
        return int(args.handler(args) or 0)
    except MetacompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _show_progress(show: bool) -> None:
    """Send the package's log lines to stderr: progress (INFO) unless ``--quiet``, warnings always."""
    logger = logging.getLogger("metacompress")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if show else logging.WARNING)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (a redirected or captured stderr included), not the one at creation."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores that
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in a test): nothing to flush
        pass


if __name__ == "__main__":
    sys.exit(main())

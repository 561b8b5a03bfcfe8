"""Run folders: where every command that writes results puts them, without ever losing a user's files.

A run folder is what ``apply``, ``train``, ``bench agents``, ``save_compressed`` and
``save_policy`` write. ``RunFolder`` gives all of them the same guarantees:

- **Checked first.** ``check()`` refuses an existing folder (unless ``overwrite``), a path
  that is a file, and an output place that cannot be written, before any expensive step.
- **Only its own runs are replaced.** Each run holds ``manifest.json`` (``kind`` and the
  package version). ``overwrite`` replaces only a folder whose manifest names the same
  kind (or an empty folder); anything else, a thesis folder or a model folder given as a
  training ``--out``, is refused with ``RunExists``, never deleted.
- **Written atomically.** ``write()`` fills a temporary sibling ``.<name>.tmp-*`` and
  renames it into place at the end, so an interrupted or failed command leaves the old run
  intact and no half-written one; the old run is removed only at the swap.
- **One record.** ``config.json`` holds the resolved config and one ``versions()`` record.
- **The user's permissions.** Folders and files follow the umask (``mkdtemp`` alone would
  make the run 0700 while its files are 0644).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from metacompress._version import __version__
from metacompress.compressors.io import umask
from metacompress.errors import InvalidConfig, RunExists, UnwritableOutput

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
KINDS = ("apply", "train", "bench-agents", "model", "policy")


def versions() -> dict[str, str]:
    """The versions that decide a run's numbers: this package, torch, SB3, gymnasium, numpy, python."""
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    return {
        "metacompress": __version__, "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
    }


Config = TypeVar("Config")


def config_from_file(path: str | Path, base: Config) -> Config:
    """``base`` (a frozen dataclass) with the fields a ``--config`` JSON file sets.

    The precedence every command follows: documented defaults, then ``--config FILE``, then
    flags. JSON lists become tuples where the field is a tuple.

    Raises:
        InvalidConfig: the file is missing, not a JSON object, or names unknown fields (all
            of them listed) or values the dataclass refuses.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidConfig(f"cannot read --config {path} ({exc}); pass a JSON object of config fields") from exc
    known = {f.name: f for f in fields(base)}
    if not isinstance(data, dict) or set(data) - set(known):
        unknown = sorted(set(data) - set(known)) if isinstance(data, dict) else type(data).__name__
        raise InvalidConfig(f"--config {path} must be a JSON object of config fields; unknown: {unknown}; known: {', '.join(known)}")
    values = {k: tuple(v) if isinstance(v, list) and isinstance(getattr(base, k), tuple) else v for k, v in data.items()}
    try:
        return replace(base, **values)
    except TypeError as exc:
        raise InvalidConfig(f"--config {path} has a value of the wrong type ({exc})") from exc


def read_manifest(path: str | Path) -> dict | None:
    """The manifest of the run folder ``path``, or None if it has none (or an unreadable one)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_writable(path: str | Path, what: str = "--out") -> None:
    """Raise ``UnwritableOutput`` unless ``path`` (a file or folder to create) can be written.

    Probes the nearest existing ancestor by creating (and removing) a file in it: permission
    bits alone do not tell, e.g. for root on a read-only or virtual file system. Called
    before the compute, so a bad ``--out`` costs nothing.
    """
    path = Path(path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = None
    if not ancestor.is_dir():
        problem = f"{ancestor} is a file, not a folder"
    else:
        try:
            fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".metacompress-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            problem = f"{ancestor} is not writable ({exc.strerror})"
    if problem:
        raise UnwritableOutput(f"cannot write {what} {path}: {problem}; choose another {what}")


class RunFolder:
    """One run's folder: checked before work, filled in a temporary sibling, swapped in at the end.

    Args:
        path: the run folder to create.
        kind: what the run is (one of ``KINDS``); ``overwrite`` replaces only runs of this kind.
        overwrite: replace an existing run of the same kind (never anything else).
    """

    def __init__(self, path: str | Path, kind: str, overwrite: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"run kind {kind!r} is not one of {KINDS}")  # a programming error, not user input
        self.path, self.kind, self.overwrite = Path(path), kind, overwrite

    def check(self, hint: str = "choose another --out or pass --overwrite to replace it") -> None:
        """Refuse, before any work, a target this run may not be written to.

        Raises:
            RunExists: the target exists and ``overwrite`` is off, or it is not a
                metacompress run of this kind (a file, someone's folder, another kind).
            UnwritableOutput: the target's folder cannot be written.
        """
        path = self.path
        if path.exists() or path.is_symlink():
            if not path.is_dir() or path.is_symlink():
                raise RunExists(f"{path} exists and is not a folder; metacompress never replaces it: choose another --out")
            if not self.overwrite:
                raise RunExists(f"{path} already exists; {hint}")
            found = self.owner()
            if found != self.kind and any(path.iterdir()):
                what = f"a metacompress {found} run" if found else f"not a metacompress run (it has no {MANIFEST})"
                raise RunExists(
                    f"{path} is {what}, so --overwrite will not replace it with a new {self.kind} run (that would delete its files); "
                    f"choose another --out, or remove {path} yourself"
                )
        check_writable(path)

    def owner(self) -> str | None:
        """The kind recorded in the target's manifest (None: no metacompress run there)."""
        manifest = read_manifest(self.path)
        return manifest.get("kind") if manifest else None

    def is_run(self) -> bool:
        """True if the target is a metacompress run of this kind (what ``resume`` continues)."""
        return self.path.is_dir() and self.owner() == self.kind

    @contextmanager
    def write(self, config: dict | None = None, keep_partial: Callable[[Path], bool] | None = None) -> Iterator[Path]:
        """Yield a temporary sibling folder to fill; it replaces the target when the block ends.

        Args:
            config: the resolved config, written to ``config.json`` with ``versions()``
                (None: no ``config.json``, e.g. for a model or policy folder).
            keep_partial: on Ctrl-C or an error, called with the temporary folder; True
                swaps it in anyway (a resumable partial run, e.g. one with a checkpoint),
                False discards it and leaves the old run as it was (None: always discard).

        Raises:
            RunExists / UnwritableOutput: see ``check`` (checked again here, as the block
                may start long after the first check).
        """
        self.check()
        tmp = self._make_temp()
        try:
            (tmp / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "kind": self.kind, "metacompress_version": __version__}))
            if config is not None:
                (tmp / "config.json").write_text(json.dumps({"config": config, "versions": versions()}, indent=2))
            yield tmp
        except BaseException:
            if keep_partial is not None and keep_partial(tmp):
                self._swap(tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._swap(tmp)

    def _make_temp(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".{self.path.name}.tmp-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o777)  # the umask applies, as for every other folder the user creates
        return tmp

    def _swap(self, tmp: Path) -> None:
        """Rename ``tmp`` to the target; an old run of this kind is moved aside first, then deleted.

        If the target may no longer be replaced (it appeared, or changed kind, during the
        run), ``tmp`` is removed and the refusal raised: nothing is left behind.
        """
        _apply_umask(tmp)
        old = None
        try:
            if self.path.exists() or self.path.is_symlink():
                self.check()  # it may have appeared or changed since the start
                old = self.path.parent / f".{self.path.name}.old-{secrets.token_hex(4)}"
                os.replace(self.path, old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the permissions the umask gives new ones.

    Some writers create files 0600 (safetensors, ``mkstemp``), which would leave a run
    with mixed permissions that a group or a web server cannot read.
    """
    mask = umask()
    for root, dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)

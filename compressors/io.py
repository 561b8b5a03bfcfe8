"""Atomic file writes: an interrupted run never leaves a half-written artifact.

Folders are written by ``metacompress.compressors.runs.RunFolder``; this module writes single files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process umask (read by setting and restoring it: POSIX offers no pure getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, then rename.

    The file gets the permissions the user's umask gives any new file (``mkstemp`` alone
    would leave it 0600 beside 0644 siblings).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o666 & ~umask())
    os.replace(tmp.name, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, like ``write_bytes_atomic``."""
    write_bytes_atomic(path, text.encode("utf-8"))

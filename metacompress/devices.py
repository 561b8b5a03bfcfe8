"""Where probes, evaluations and recovery run: ``cpu``, ``cuda`` or ``auto``, resolved before any work.

The device changes only where tensors live: budgets are priced from the structure and the
hardware model, never measured on the device, so a plan's cost does not depend on it.
"""

from __future__ import annotations

import torch

from metacompress.errors import MetacompressError

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """The ``torch.device`` for ``device``: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (cuda when available).

    Raises:
        MetacompressError: an unknown name, or cuda asked for on a machine without it.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MetacompressError(f"device {device!r} was asked for, but this torch build or machine has no CUDA; use --device cpu or auto")
        try:
            resolved = torch.device(name)
        except RuntimeError as exc:
            raise MetacompressError(f"cannot read device {device!r}; write cuda or cuda:N") from exc
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise MetacompressError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return resolved
    raise MetacompressError(f"device {device!r} is unknown; use one of {', '.join(DEVICES)}")

"""Training checkpoints: written atomically, read with ``weights_only=True``, and the checks a resume needs.

A checkpoint is ``checkpoints/ckpt-<timesteps, 9 digits>.pt`` holding tensors and plain
values only (policy and optimizer state, the step count), so loading runs no code: a
tampered file is a ``CorruptFile`` error, never an executed payload.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from metacompress.errors import CorruptFile, MetacompressError
from metacompress.compressors.runs import RunFolder


def save_checkpoint(model, folder: Path) -> Path:
    """An SB3 model's policy, optimizer and step count as ``ckpt-<timesteps>.pt`` in ``folder``."""
    state = {"policy": model.policy.state_dict(), "optimizer": model.policy.optimizer.state_dict(), "num_timesteps": model.num_timesteps}
    return write_checkpoint(state, folder, model.num_timesteps)


def write_checkpoint(state: dict, folder: Path, timesteps: int) -> Path:
    """Write ``state`` (tensors and plain values only) to ``ckpt-<timesteps>.pt`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt-{timesteps:09d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("ckpt-*.pt"))
    return found[-1] if found else None


def checkpoint_timesteps(path: Path | None) -> int:
    """The step count a checkpoint file was written at (0 for none)."""
    return int(path.stem.split("-")[1]) if path is not None else 0


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain values, never code.

    Raises:
        CorruptFile: the file is truncated, or holds objects ``weights_only`` refuses to
            unpickle (a tampered or foreign file).
    """
    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFile(
            f"checkpoint {path} cannot be loaded safely ({reason}); delete it to resume from the one before, or start a new run"
        ) from exc


def check_resume(folder: RunFolder, config: dict) -> None:
    """Refuse to resume anything but a train run made with the same config (``asdict`` of it), before any work.

    Raises:
        MetacompressError: no train run there, or another config.
        CorruptFile: its config.json or newest checkpoint cannot be read safely.
    """
    out = folder.path
    if not folder.is_run():
        what = "does not exist" if not out.exists() else f"is not a metacompress train run (it has no {folder.kind} manifest.json)"
        raise MetacompressError(f"cannot resume {out}: it {what}; start a new run without --resume")
    try:
        saved = json.loads((out / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFile(f"cannot resume {out}: its config.json is missing or corrupt ({exc}); start a new run") from exc
    if saved != json.loads(json.dumps(config)):
        raise MetacompressError(f"cannot resume {out} with a different config; rerun with the original flags (see {out / 'config.json'})")
    checkpoint = latest_checkpoint(out / "checkpoints")
    if checkpoint is not None:
        load_checkpoint(checkpoint)  # a corrupt or unsafe one is refused now, not after the workers start

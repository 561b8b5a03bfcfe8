"""Saving and loading fitted unit predictors (``agents.unit_predictors``) as policy-like folders.

A saved predictor is a folder with ``predictor.safetensors`` (the networks' tensors, under
``f.`` and ``g.``, and the support set: ``support.features`` (units, len(FEATURE_COLUMNS))
float32 and ``support.tables`` (units, len(GRID)) float64, NaN where a unit lacks an option)
and ``predictor.json`` (format, kind, grid, feature columns, network shape, seed, package
version, the support units' models and indices, and the training record). Loading checks
each against this version, so a predictor for another grid or feature set, or a corrupt
file, is a clear ``PolicyError`` (as for ``agents.policy_io``), never a silent wrong table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from metacompress._version import __version__
from metacompress.agents.policy_io import read_tensors
from metacompress.agents.unit_predictors import FEATURE_COLUMNS, GRID, KINDS, UnitExample, UnitPredictor
from metacompress.errors import PolicyError

PREDICTOR_FORMAT = 1
DESCRIPTION = "predictor.json"
WEIGHTS = "predictor.safetensors"


def is_predictor(path: str | Path) -> bool:
    """True if ``path`` holds a saved predictor description (it may still be corrupt)."""
    return (Path(path) / DESCRIPTION).exists()


def _networks(predictor: UnitPredictor) -> dict[str, torch.nn.Module]:
    return {"f": predictor.f, **({"g": predictor.g} if predictor.g is not None else {})}


def save_predictor(predictor: UnitPredictor, path: str | Path, overwrite: bool = False, training: dict | None = None) -> Path:
    """Write a fitted ``predictor`` to the folder ``path`` atomically (``overwrite`` replaces only a policy folder).

    Args:
        predictor: a ``UnitPredictor`` after ``fit`` (it has a support set).
        path: the folder to create.
        overwrite: replace an existing policy folder there.
        training: the training record (models, seconds, config), kept for people.

    Raises:
        PolicyError: the predictor has no support set (it was never fitted).
    """
    from metacompress.compressors.runs import RunFolder

    if not predictor.support:
        raise PolicyError("this unit predictor has no support set; call fit(examples) before save_predictor")
    tensors = {f"{name}.{key}": value.detach().cpu().contiguous() for name, net in _networks(predictor).items()
               for key, value in net.state_dict().items()}
    tensors["support.features"] = torch.as_tensor(np.stack([s.features for s in predictor.support]), dtype=torch.float32)
    tensors["support.tables"] = torch.as_tensor(np.stack([s.table for s in predictor.support]), dtype=torch.float64)
    description = {
        "format": PREDICTOR_FORMAT, "kind": predictor.kind, "grid": [list(g) for g in GRID], "feature_columns": list(FEATURE_COLUMNS),
        "width": predictor.width, "embedding": predictor.embedding, "steps": predictor.steps, "lr": predictor.lr, "seed": predictor.seed,
        "support_models": [s.model for s in predictor.support], "support_units": [s.unit for s in predictor.support],
        "training_models": sorted({s.model for s in predictor.support}), "metacompress_version": __version__,
        "training": training or {},
    }
    with RunFolder(path, "policy", overwrite).write() as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / DESCRIPTION).write_text(json.dumps(description, indent=2))
    return Path(path)


def load_predictor(path: str | Path) -> UnitPredictor:
    """Load a predictor folder, checking it was made for this version's grid and features.

    Raises:
        PolicyError: if the folder is missing, corrupt, or made for another grid, feature
            set or format (the message says which and how to fix it).
    """
    folder = Path(path)
    description, weights = folder / DESCRIPTION, folder / WEIGHTS
    retrain = "retrain it with `metacompress train --algo relation` (or prototypical)"
    if not description.exists() or not weights.exists():
        raise PolicyError(f"{folder} is not a saved unit predictor (needs {DESCRIPTION} and {WEIGHTS}); {retrain}")
    try:
        data = json.loads(description.read_text())
        kind, shape = data["kind"], {k: data[k] for k in ("width", "embedding", "steps", "lr", "seed")}
        models, units = list(data["support_models"]), [int(u) for u in data["support_units"]]
        problems = []
        if data.get("format") != PREDICTOR_FORMAT:
            problems.append(f"format {data.get('format')!r}, this version reads {PREDICTOR_FORMAT}")
        if kind not in KINDS:
            problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        if [tuple(g) for g in data["grid"]] != [tuple(g) for g in GRID]:
            problems.append(f"its option grid has {len(data['grid'])} entries that differ from this version's {len(GRID)}")
        if list(data["feature_columns"]) != list(FEATURE_COLUMNS):
            problems.append(f"feature columns {data['feature_columns']} differ from this version's {list(FEATURE_COLUMNS)}")
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{description} is corrupt ({exc}); {retrain}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyError(f"{description} is not a unit predictor description (missing or bad {exc}); {retrain}") from exc
    if problems:
        raise PolicyError(f"unit predictor {folder} does not fit this metacompress: {'; '.join(problems)}; {retrain}")
    state = read_tensors(weights, retrain)
    try:
        predictor = UnitPredictor(kind, **shape)
        features, tables = state.pop("support.features"), state.pop("support.tables")
        if features.shape != (len(models), len(FEATURE_COLUMNS)) or tables.shape != (len(models), len(GRID)) or len(units) != len(models):
            raise RuntimeError(f"support tensors {tuple(features.shape)} and {tuple(tables.shape)} do not fit {len(models)} support units")
        for name, net in _networks(predictor).items():
            net.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(f"{name}.")})
        if any(k.split(".")[0] not in _networks(predictor) for k in state):
            raise RuntimeError(f"unexpected tensors {sorted(k for k in state if k.split('.')[0] not in _networks(predictor))[:4]}")
    except (KeyError, RuntimeError) as exc:
        raise PolicyError(f"{weights} does not match the predictor in {DESCRIPTION} ({str(exc).splitlines()[0]}); {retrain}") from exc
    predictor.support = [UnitExample(m, u, f.numpy(), t.numpy()) for m, u, f, t in zip(models, units, features, tables)]
    return predictor

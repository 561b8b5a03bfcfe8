"""A tiny task world: untrained-but-calibrated tiny models on synthetic data.

The env's mechanics (features, projection, budget, determinism) and the planners' do not
need trained models; the zoo-backed world is exercised by the integration tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiny_models import TINY_MODELS, example_input, trained_like


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Data:
    train: Split
    search: Split
    test: Split


def tiny_data(model, seed: int = 0, n: int = 96) -> Data:
    """Labels are the model's own predictions on noisy inputs: accuracy starts at 100%."""
    x = example_input(model, batch=3 * n, seed=seed)
    with torch.no_grad():
        y = model(x).argmax(dim=-1)
    return Data(Split(x[:n], y[:n]), Split(x[n : 2 * n], y[n : 2 * n]), Split(x[2 * n :], y[2 * n :]))


def tiny_loader(model_id: str):
    torch.manual_seed(0)
    model = trained_like(TINY_MODELS[model_id]())
    return model, tiny_data(model)

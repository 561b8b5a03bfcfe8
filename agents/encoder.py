"""A set encoder over the whole network, as an SB3 features extractor: the policy sees every unit.

The ``network`` observation (``envs.features``) is the current step's vector followed by a
padded table of the model's decision units. Each real row goes through a shared MLP (Deep
Sets, Zaheer et al. 2017); the rows are pooled by masked mean and max and by one
attention read-out whose query is the current step (so "which other units compete for
this budget" is learned, not hand-built). Padding rows are masked out, so the encoding
does not depend on how many units a model has, only on what they are.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from metacompress.envs.features import STEP_DIM, TABLE_FEATURES, TABLE_UNITS

ROW_WIDTH = 64
STEP_WIDTH = 128


class UnitSetExtractor(BaseFeaturesExtractor):
    """Step MLP + Deep-Sets/attention pooling of the unit table; output ``STEP_WIDTH + 3 * ROW_WIDTH`` features."""

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        super().__init__(observation_space, features_dim=STEP_WIDTH + 3 * ROW_WIDTH)
        self.step = nn.Sequential(nn.Linear(STEP_DIM, STEP_WIDTH), nn.Tanh())
        self.rows = nn.Sequential(nn.Linear(TABLE_FEATURES, ROW_WIDTH), nn.Tanh(), nn.Linear(ROW_WIDTH, ROW_WIDTH), nn.Tanh())
        self.query = nn.Linear(STEP_WIDTH, ROW_WIDTH)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        step = self.step(observations[:, :STEP_DIM])  # (N, STEP_WIDTH)
        table = observations[:, STEP_DIM:].reshape(-1, TABLE_UNITS, TABLE_FEATURES)
        real = table[:, :, -1:] > 0.5  # (N, U, 1)
        rows = self.rows(table) * real  # (N, U, ROW_WIDTH), padding zeroed
        count = real.sum(dim=1).clamp(min=1)
        mean = rows.sum(dim=1) / count
        maximum = rows.masked_fill(~real, -1.0).max(dim=1).values
        scores = (rows @ self.query(step).unsqueeze(-1)).squeeze(-1) / ROW_WIDTH**0.5  # (N, U)
        weights = torch.softmax(scores.masked_fill(~real.squeeze(-1), -1e9), dim=1)
        attended = (weights.unsqueeze(-1) * rows).sum(dim=1)
        return torch.cat([step, mean, maximum, attended], dim=1)

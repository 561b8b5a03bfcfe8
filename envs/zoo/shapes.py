"""A procedural colour image set, harder than digits: 10 shapes and textures at 3x16x16.

Class is the *form* only; everything else is a nuisance the model must ignore: the
foreground and background colours (always at least 0.3 apart per channel), position,
size, a small rotation, brightness, pixel noise and, in half the images, a distractor
blob of a third colour. Small rotations (at most 15 degrees) keep ``plus`` and ``cross``
(and horizontal and vertical stripes) apart.
"""

from __future__ import annotations

import numpy as np

SIDE = 16
NUM_SAMPLES = 16_000
CLASSES = ("disk", "ring", "square", "square-outline", "triangle", "plus", "cross", "h-stripes", "v-stripes", "checker")
MAX_ROTATION_RAD = np.deg2rad(15.0)
NOISE_STD = 0.2


def _mask(label: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Foreground mask of each sample, from its class and local coordinates.

    Args:
        label: (N,) class indices.
        u, v: (N, SIDE, SIDE) pixel coordinates in the shape's frame, scaled so the
            shape spans roughly [-1, 1].
    """
    radius = np.sqrt(u**2 + v**2)
    box = np.maximum(np.abs(u), np.abs(v))
    diag_a, diag_b = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
    in_patch = box <= 0.9
    forms = np.stack(
        [
            radius <= 1.0,
            (radius >= 0.55) & (radius <= 1.0),
            box <= 0.8,
            (box >= 0.5) & (box <= 0.85),
            (v >= -0.8) & (v <= 0.8) & (np.abs(u) <= (v + 0.8) * 0.6),
            ((np.abs(u) <= 0.25) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.25) & (np.abs(u) <= 0.95)),
            ((np.abs(diag_a) <= 0.25) & (np.abs(diag_b) <= 0.95)) | ((np.abs(diag_b) <= 0.25) & (np.abs(diag_a) <= 0.95)),
            in_patch & (np.sin(v * 2.2 * np.pi) > 0),
            in_patch & (np.sin(u * 2.2 * np.pi) > 0),
            in_patch & (np.sin(u * 2.2 * np.pi) * np.sin(v * 2.2 * np.pi) > 0),
        ]
    )  # (classes, N, SIDE, SIDE)
    return np.take_along_axis(forms, label[None, :, None, None], axis=0)[0]


def make_shapes(seed: int, num_samples: int = NUM_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_samples`` images and labels from ``seed`` (balanced classes).

    Returns:
        ``x`` of shape (N, 3, SIDE, SIDE), float64 roughly in [-0.5, 1.5], and ``y`` (N,).
    """
    rng = np.random.default_rng(seed)
    n = num_samples
    label = rng.permutation(np.arange(n) % len(CLASSES))
    centre = rng.uniform(SIDE / 2 - 2.5, SIDE / 2 + 2.5, size=(n, 2, 1, 1))
    scale = rng.uniform(3.5, 5.5, size=(n, 1, 1))
    angle = rng.uniform(-MAX_ROTATION_RAD, MAX_ROTATION_RAD, size=(n, 1, 1))
    rows, cols = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    dx, dy = cols - centre[:, 0], rows - centre[:, 1]
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / scale
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / scale
    mask = _mask(label, u, v)[:, None]  # (N, 1, SIDE, SIDE)

    background = rng.uniform(0, 1, size=(n, 3, 1, 1))
    foreground = (background + rng.uniform(0.3, 0.7, size=(n, 3, 1, 1))) % 1.0
    image = np.where(mask, foreground, background)

    # A 3x3 distractor blob in half the images, in a random third colour.
    blob_colour = rng.uniform(0, 1, size=(n, 3, 1, 1))
    blob_at = rng.integers(0, SIDE - 2, size=(n, 2, 1, 1))
    blob = (np.abs(rows - 1.5 - blob_at[:, 0]) <= 1.5) & (np.abs(cols - 1.5 - blob_at[:, 1]) <= 1.5)
    blob &= (rng.uniform(size=(n, 1, 1)) < 0.5)
    image = np.where(blob[:, None], blob_colour, image)

    image = image * rng.uniform(0.7, 1.2, size=(n, 1, 1, 1)) + rng.normal(0, NOISE_STD, size=image.shape)
    return image, label

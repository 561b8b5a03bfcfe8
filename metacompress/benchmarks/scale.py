"""``metacompress bench scale``: how analysis, probes, one evaluation and planning grow with the model.

Untrained ResNet-family CNNs (``envs.zoo.families``; timings do not depend on the weights'
values) of about 0.1M, 1M and 11M parameters, on random 3-channel images at each
resolution. Per model it times, on the chosen device:

- analyze: ``build_graph`` (units, channel groups, the search-mode working copy);
- probes: ``compute_probes`` (Hessian traces + ``PROBE_EVALUATIONS_PER_UNIT`` proxy
  evaluations per non-frozen unit); the evaluations actually run are counted, so the
  README's "at most a fixed number of evaluations per unit" is checked, not assumed;
- one evaluation: the proxy score of a fresh (uncached) mixed plan;
- planning: ``HawqPlanner`` (the exact ILP solver, one evaluation) under ``bitops=0.25``.

Sample counts are small by default (``samples`` per split, which is also the calibration
and Hessian batch) so the default run stays within minutes on two cores; evaluation time
is linear in them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from metacompress.devices import resolve_device

SIZES = {"0.1M": (12, 2), "1M": (40, 2), "11M": (128, 2)}
"""Parameter-count label -> ResNet (width, depth): 99k, 1.09M and 11.1M parameters at 10 classes."""
PROBE_EVALUATIONS_PER_UNIT = 4  # drop_w2, drop_a2, drop_w4a4, drop_prune50 (envs.probes)


@dataclass(frozen=True)
class ScaleConfig:
    """Knobs of ``bench scale`` (defaults are what the README quotes).

    Args:
        sizes: labels of ``SIZES`` to run.
        resolutions: square input sides in pixels.
        samples: samples per split (train: calibration and Hessian batch; search: the proxy).
        device: ``cpu``, ``cuda`` or ``auto``.
        seed: seeds weights and data.
    """

    sizes: tuple[str, ...] = ("0.1M", "1M", "11M")
    resolutions: tuple[int, ...] = (16, 32)
    samples: int = 16
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        from metacompress.errors import MetacompressError

        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown or not self.sizes:
            raise MetacompressError(f"unknown model size(s) {', '.join(unknown) or '(none)'}; use some of {', '.join(SIZES)}")
        if not self.resolutions or min(self.resolutions) < 8:
            raise MetacompressError(f"resolutions must be >= 8 pixels (the ResNet downsamples 3 times), got {self.resolutions}")
        if self.samples < 8:
            raise MetacompressError(f"samples must be >= 8, got {self.samples}")


@dataclass(frozen=True)
class ScaleRow:
    """One model at one resolution: sizes, seconds per stage, and the probes' evaluations per unit."""

    size: str
    resolution: int
    params: int
    units: int
    analyze_s: float
    probe_s: float
    probe_evaluations: int
    evaluations_per_unit: float
    evaluation_s: float
    planning_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_scale_bench(config: ScaleConfig) -> list[ScaleRow]:
    """Time every (size, resolution) pair of ``config`` (see the module docstring)."""
    from metacompress.agents.hawq import HawqPlanner
    from metacompress.compressors.budget import Budget
    from metacompress.compressors.graph import build_graph
    from metacompress.compressors.hardware import get_hardware
    from metacompress.compressors.plan import Plan
    from metacompress.data import UserSplits
    from metacompress.envs.context import TaskContext
    from metacompress.envs.evaluator import ModelEvaluator
    from metacompress.envs.probes import compute_probes
    from metacompress.envs.zoo.datasets import Split
    from metacompress.envs.zoo.families import build_model

    device = resolve_device(config.device)
    hardware = get_hardware("bismo-edge")
    rows = []
    for size in config.sizes:
        width, depth = SIZES[size]
        for side in config.resolutions:
            torch.manual_seed(config.seed)
            model = build_model("resnet", (3, side, side), 10, width, depth).eval().to(device)
            n = config.samples
            x = torch.randn(3 * n, 3, side, side, device=device)
            y = torch.randint(0, 10, (3 * n,), device=device)
            data = UserSplits(Split(x[:n], y[:n]), Split(x[n : 2 * n], y[n : 2 * n]), Split(x[2 * n :], y[2 * n :]))
            start = time.perf_counter()
            build_graph(model, x[:8])
            _synchronize(device)
            analyze_s = time.perf_counter() - start
            evaluator = ModelEvaluator(model, data, calibration_samples=n, proxy_samples=n)
            start = time.perf_counter()
            probes = compute_probes(evaluator, config.seed)
            _synchronize(device)
            probe_s = time.perf_counter() - start
            probe_evaluations = evaluator.stats.evaluations
            active = sum(not unit.frozen for unit in evaluator.spec.units)
            spec = evaluator.spec
            plan = Plan.uniform(spec, prune=0.25, w_bits=6, a_bits=6)
            start = time.perf_counter()
            evaluator.proxy_accuracy(plan)
            _synchronize(device)
            evaluation_s = time.perf_counter() - start
            context = TaskContext(evaluator, probes, hardware, Budget("bitops", 0.25), name=f"resnet-{size}@{side}")
            start = time.perf_counter()
            HawqPlanner().plan(context, 1, config.seed)
            _synchronize(device)
            planning_s = time.perf_counter() - start
            rows.append(ScaleRow(size, side, spec.total_params, len(spec.units), analyze_s, probe_s, probe_evaluations,
                                 probe_evaluations / max(active, 1), evaluation_s, planning_s))
    return rows

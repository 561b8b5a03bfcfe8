"""This machine's CPU, measured: time physically pruned layers with torch, write a lookup table.

For every distinct layer shape of a model (and the embedding's probe layers) a standalone
torch layer is built at each kept-channel shape of a grid (fractions 0.25/0.5/0.75/1.0 of
its inputs and outputs by default): a physically smaller ``Conv1d``/``Conv2d``/``Linear``,
not a masked one. Each is timed at batch 1 under ``torch.inference_mode`` after warm-up
runs: a repeat runs the layer enough times to last ``min_repeat_ms`` (timer noise), and
the latency is the median over repeats. ``torch.set_num_threads(1)`` by default (a phone
core, and stable timings on shared CI machines); the old thread count is restored.

Bits: CPU kernels here run fp32 whatever the plan's bits, so the measured latency is
bit-independent: only W8A8 rows are written and the table's supported bits are ``(8,)``,
so every width is priced as 8-bit. That is the honest answer for this machine; a real
int8/int4 target needs its own table. Energy is not measured (no portable counter).

``measured_rank_correlation`` then compares a preset's predicted whole-model latency with
the measured table's over many random plans (Spearman), the check that a roofline preset
ranks plans the way a real CPU does.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from metacompress.compressors.budget import kept_at
from metacompress.compressors.cost import count_macs, total_cost
from metacompress.compressors.hardware.base import Hardware
from metacompress.compressors.hardware.embedding import PROBE_FRACTIONS, PROBE_LAYERS
from metacompress.compressors.hardware.lookup import LookupTableHardware, kept_grid, layer_signature, lut_row, write_lut_csv
from metacompress.compressors.spec import LayerSpec, ModelSpec, UnitSpec
from metacompress.errors import HardwareError

log = logging.getLogger(__name__)

KEPT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def build_torch_layer(layer: LayerSpec, kept_in: int, kept_out: int) -> tuple[nn.Module, torch.Tensor]:
    """A standalone torch layer at the kept shape and a batch-1 input for it.

    Conv2d and Conv3d maps are made as square (cubic) as the positions allow; the padding
    is the one that reproduces ``out_positions`` at the layer's stride. A transposed conv is
    built as one (``nn.ConvTranspose1d/2d/3d``).

    Raises:
        HardwareError: for a kernel of more than three dims.
    """
    if layer.kind == "linear":
        shape = (1, kept_in) if layer.in_positions == 1 else (1, layer.in_positions, kept_in)
        return nn.Linear(kept_in, kept_out, bias=layer.has_bias), torch.randn(shape)
    dims = len(layer.kernel_size)
    if dims not in (1, 2, 3):
        raise HardwareError(f"cannot measure layer {layer.name!r}: {dims}-d kernels are not timed (1-D to 3-D only)")
    groups = kept_out if layer.kind == "depthwise" else layer.groups
    if layer.kind == "depthwise":
        kept_in = kept_out
    sizes = _balanced_factors(layer.in_positions, dims)
    padding = _padding_for(layer, sizes)
    kind = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if layer.transposed else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    conv = kind[dims - 1](kept_in, kept_out, layer.kernel_size, stride=layer.stride, padding=padding, groups=groups, bias=layer.has_bias)
    return conv, torch.randn((1, kept_in) + sizes)


def _balanced_factors(positions: int, dims: int) -> tuple[int, ...]:
    """``dims`` sizes whose product is ``positions``, each as close to the ``dims``-th root as divisors allow."""
    if dims == 1:
        return (positions,)
    first = max(1, round(positions ** (1 / dims)))
    while positions % first:
        first -= 1
    return (first,) + _balanced_factors(positions // first, dims - 1)


def _padding_for(layer: LayerSpec, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Per-dim padding ``min(p, k // 2)`` for the largest ``p`` ("same" first) that reproduces ``out_positions``."""
    for p in range(max(layer.kernel_size) // 2, -1, -1):
        pads = tuple(min(p, k // 2) for k in layer.kernel_size)
        if layer.transposed:
            out = math.prod((s - 1) * layer.stride - 2 * pad + k for s, pad, k in zip(sizes, pads, layer.kernel_size))
        else:
            out = math.prod((s + 2 * pad - k) // layer.stride + 1 for s, pad, k in zip(sizes, pads, layer.kernel_size))
        if out == layer.out_positions:
            return pads
    log.debug("layer %s: no padding reproduces %d output positions; using 'same'", layer.name, layer.out_positions)
    return tuple(k // 2 for k in layer.kernel_size)


def time_call_ms(call: Callable[[], object], repeats: int = 7, warmup: int = 2, min_repeat_ms: float = 0.5) -> float:
    """Median milliseconds of one ``call()``.

    Args:
        call: runs the thing once (a layer's forward, an onnxruntime session run).
        repeats: timed repeats; the median is returned.
        warmup: untimed runs first (allocations, caches).
        min_repeat_ms: each repeat loops ``call`` until it lasts about this long.
    """
    for _ in range(max(1, warmup)):
        call()
    start = time.perf_counter()
    call()
    once_ms = max((time.perf_counter() - start) * 1e3, 1e-4)
    loops = max(1, int(math.ceil(min_repeat_ms / once_ms)))
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(loops):
            call()
        samples.append((time.perf_counter() - start) * 1e3 / loops)
    return statistics.median(samples)


def time_layer_ms(module: nn.Module, x: torch.Tensor, repeats: int = 7, warmup: int = 2, min_repeat_ms: float = 0.5) -> float:
    """Median milliseconds of one forward pass of ``module`` on ``x`` (under ``torch.inference_mode``)."""
    module.eval()
    with torch.inference_mode():
        return time_call_ms(lambda: module(x), repeats, warmup, min_repeat_ms)


def measure_layers(layers: Iterable[LayerSpec], fractions: tuple[float, ...] = KEPT_FRACTIONS, repeats: int = 7,
                   warmup: int = 2, min_repeat_ms: float = 0.5, threads: int | None = 1, seed: int = 0) -> list[dict]:
    """Time every distinct layer shape at every kept shape of the grid; lookup-table rows (W8A8).

    Args:
        layers: the layers to measure (duplicates by shape are measured once).
        fractions: kept fractions of input and output channels, in (0, 1].
        repeats: timed repeats per shape (median).
        warmup: untimed runs per shape.
        min_repeat_ms: each repeat lasts about this long.
        threads: torch intra-op threads while measuring (None: leave torch's setting).
        seed: seeds the random weights and inputs (timings do not depend on them).

    Raises:
        HardwareError: for a fraction outside (0, 1], repeats below 1, threads below 1, or a
            layer that cannot be built (all settings are checked before timing starts).
    """
    problems = []
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        problems.append(f"kept fractions {fractions} must be in (0, 1], e.g. 0.25 0.5 0.75 1.0")
    if repeats < 1 or warmup < 0:
        problems.append(f"repeats {repeats} must be >= 1 and warmup {warmup} >= 0")
    if threads is not None and threads < 1:
        problems.append(f"threads {threads} must be >= 1 (or None to keep torch's setting)")
    if problems:
        raise HardwareError("cannot measure: " + "; ".join(problems))
    torch.manual_seed(seed)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows, seen = [], set()
    try:
        for layer in layers:
            sig = layer_signature(layer)
            if sig in seen:
                continue
            seen.add(sig)
            for kept_in, kept_out in kept_grid(layer, fractions):
                module, x = build_torch_layer(layer, kept_in, kept_out)
                latency_ms = time_layer_ms(module, x, repeats, warmup, min_repeat_ms)
                rows.append(lut_row(layer, kept_in, kept_out, 8, 8, latency_ms))
            log.info("measured %s (%d shapes)", layer.name, len(kept_grid(layer, fractions)))
    finally:
        torch.set_num_threads(previous)
    return rows


def measure_cpu(spec: ModelSpec, out_path: str | Path, fractions: tuple[float, ...] = KEPT_FRACTIONS, repeats: int = 7,
                warmup: int = 2, min_repeat_ms: float = 0.5, threads: int | None = 1, seed: int = 0,
                include_probes: bool = True) -> LookupTableHardware:
    """Measure this CPU on ``spec``'s layers (and the embedding probes); write and return the table.

    The returned hardware is named ``measured:<file name>`` and prices every layer of
    ``spec`` for kept fractions down to ``min(fractions)`` (smaller is priced as that).
    """
    rows = measure_layers(spec.computing_layers, fractions, repeats, warmup, min_repeat_ms, threads, seed)
    if include_probes:
        rows += measure_layers(PROBE_LAYERS, PROBE_FRACTIONS, repeats, warmup, min_repeat_ms, threads, seed)
    path = write_lut_csv(out_path, rows)
    return LookupTableHardware.from_csv(path, archetype="measured")


def budget_floors(spec: ModelSpec, hardware: Hardware, max_prune: float) -> dict[str, float | None]:
    """Per budget kind, the smallest fraction of W8A8 cost a plan can reach on ``hardware`` (None: it cannot price that kind).

    What a measured table can serve: ``latency`` from the timings; ``size`` and
    ``bitops`` only by pruning when the table holds 8-bit rows alone (fp32 kernels run
    every width at 8-bit cost, so plans stay W8A8); ``energy`` only if it was measured.
    """
    from metacompress.compressors.budget import Budget, BudgetProjector
    from metacompress.compressors.cost import BUDGET_KINDS

    floors: dict[str, float | None] = {}
    for kind in BUDGET_KINDS:
        if kind == "energy" and not hardware.has_energy:
            floors[kind] = None
            continue
        projector = BudgetProjector(spec, hardware, Budget(kind, 1.0), max_prune)
        floors[kind] = projector.minimum_cost() / projector.reference_cost
    return floors


def random_kept(spec: ModelSpec, rng: np.random.Generator, max_prune: float = 0.75) -> list[int]:
    """A random kept-channel vector: each prunable unit keeps a uniform fraction in [1 - max_prune, 1]."""
    kept = []
    for unit in spec.units:
        if not unit.prunable or unit.frozen:
            kept.append(unit.channels)
            continue
        kept.append(kept_at(unit, rng.uniform(0.0, max_prune), max_prune))
    return kept


def measured_rank_correlation(spec: ModelSpec, measured: Hardware, predicted: Hardware, n_plans: int = 200,
                              seed: int = 0, max_prune: float = 0.75) -> tuple[float, np.ndarray, np.ndarray]:
    """Spearman correlation of predicted vs measured whole-model latency over random plans.

    Plans prune each unit by a random ratio up to ``max_prune`` at W8A8 (the measured CPU
    is bit-independent, so bits would only add ties).

    Returns:
        ``(rho, predicted_ms, measured_ms)`` with one latency per plan; ``rho`` is NaN when
        either side gives every plan the same latency (a model too small for pruning to show
        in the timings): there is no ranking to compare.
    """
    rng = np.random.default_rng(seed)
    bits = [8] * len(spec.units)
    pred, meas = [], []
    for _ in range(n_plans):
        kept = random_kept(spec, rng, max_prune)
        pred.append(total_cost(spec, "latency", kept, bits, bits, predicted))
        meas.append(total_cost(spec, "latency", kept, bits, bits, measured))
    pred_ms, meas_ms = np.array(pred), np.array(meas)
    if np.ptp(pred_ms) == 0 or np.ptp(meas_ms) == 0:
        return float("nan"), pred_ms, meas_ms
    return float(spearmanr(pred_ms, meas_ms).statistic), pred_ms, meas_ms


# the default model to measure ----------------------------------------------------------
class TinyResNet(nn.Module):
    """A small ResNet-style CNN for 3x32x32 inputs: stem, two residual stages, a separable block."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.sep = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.b1(x))
        x = torch.relu(self.b2(x) + self.down(x))
        x = self.sep(x)
        return self.fc(x.mean(dim=(2, 3)))


def tiny_resnet_spec() -> ModelSpec:
    """``TinyResNet``'s spec written by hand (what ``analyze`` finds), for use without tracing."""
    def conv(name, cin, cout, k, stride, size, unit, src, kind="conv"):
        out = -(-size // stride)
        groups = cin if kind == "depthwise" else 1
        return LayerSpec(name, kind, cin, cout, (k, k), stride, groups, size * size, out * out, False, unit,
                         in_units=((src, 1),) if src is not None else (), in_fixed=0 if src is not None else cin)

    layers = (conv("stem.0", 3, 16, 3, 1, 32, 0, None), conv("b1.0", 16, 16, 3, 1, 32, 1, 0),
              conv("b1.3", 16, 16, 3, 1, 32, 0, 1), conv("b2.0", 16, 32, 3, 2, 32, 2, 0),
              conv("b2.3", 32, 32, 3, 1, 16, 3, 2), conv("down.0", 16, 32, 1, 2, 32, 3, 0),
              conv("sep.0", 32, 32, 3, 1, 16, 3, 3, kind="depthwise"), conv("sep.3", 32, 64, 1, 1, 16, 4, 3),
              LayerSpec("fc", "linear", 64, 10, (), 1, 1, 1, 1, True, 5, in_units=((4, 1),)))
    units = (UnitSpec(0, "stem.0+1", ("stem.0", "b1.3"), 16, fp32_per_channel=4),
             UnitSpec(1, "b1.0", ("b1.0",), 16, fp32_per_channel=2),
             UnitSpec(2, "b2.0", ("b2.0",), 32, fp32_per_channel=2),
             UnitSpec(3, "b2.3+2", ("b2.3", "sep.0", "down.0"), 32, fp32_per_channel=6),
             UnitSpec(4, "sep.3", ("sep.3",), 64, fp32_per_channel=2),
             UnitSpec(5, "fc", ("fc",), 10, prunable=False, frozen=True, reason="its output is the model output (classifier head)"))
    params = sum(p.numel() for p in TinyResNet().parameters())
    return ModelSpec(units, layers, (3, 32, 32), total_params=params)


def default_model_spec() -> ModelSpec:
    """The spec of ``TinyResNet``: traced by ``analyze`` when available, else written by hand."""
    try:
        from metacompress.compressors.graph import analyze
    except ImportError:
        log.info("metacompress.compressors.graph.analyze is not available; using the hand-written TinyResNet spec")
        return tiny_resnet_spec()
    model = TinyResNet().eval()
    return analyze(model, torch.randn(1, 3, 32, 32))


def measured_cpu_figure(spec: ModelSpec | None = None, lut_path: str | Path | None = None, out_path: str | Path | None = None,
                        n_plans: int = 200, seed: int = 0, repeats: int = 7, preset: str = "cortex-a76-int8"):
    """The measured-CPU calibration figure: Spearman(preset prediction, this CPU) over random plans.

    Args:
        spec: the model (default: ``default_model_spec()``).
        lut_path: reuse a table from ``metacompress hardware measure`` instead of measuring.
        out_path: where to write the new table when measuring (default: a temporary file).
        n_plans: random plans to rank.
        seed: seeds the plans and the measured layers' weights.
        repeats: timed repeats per layer shape when measuring.
        preset: the preset whose predictions are compared.
    """
    import tempfile

    from metacompress.compressors.hardware.calibration import CalibrationFigure
    from metacompress.compressors.hardware.presets import get_hardware

    spec = spec or default_model_spec()
    if lut_path is not None:
        measured = LookupTableHardware.from_csv(lut_path, archetype="measured")
    elif out_path is not None:
        measured = measure_cpu(spec, out_path, repeats=repeats, seed=seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            measured = measure_cpu(spec, Path(tmp) / "cpu.csv", repeats=repeats, seed=seed)
    rho, _, meas_ms = measured_rank_correlation(spec, measured, get_hardware(preset), n_plans, seed)
    rng = np.random.default_rng(seed)  # the same plans again, ranked by MACs alone for comparison
    macs = [count_macs(spec, random_kept(spec, rng)) for _ in range(n_plans)]
    return CalibrationFigure(
        f"Spearman(predicted, measured latency) over {n_plans} random plans", preset, rho, 0.7, 1.0,
        f"this CPU ({measured.name}: fp32, 1 torch thread), {len(spec.layers)}-layer model, measured "
        f"{meas_ms.min():.3f}-{meas_ms.max():.3f} ms; MACs alone rank them at {spearmanr(macs, meas_ms).statistic:.3f}",
        "issue 3: a roofline CPU preset should rank plans as a real CPU does")

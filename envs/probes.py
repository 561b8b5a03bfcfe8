"""Per-unit sensitivity probes: how much accuracy a unit loses alone, and its loss curvature.

Computed once per model and cached as JSON. Both the environment's observation and the
HAWQ-style baseline read them. Probes are cheap, model-agnostic and comparable across
models because they are measured in accuracy (a fraction) and in loss curvature of the
same cross-entropy loss, never normalised per network.

Probe set per unit (every other unit stays at W8A8, unpruned):
    drop_w2, drop_a2, drop_w4a4, drop_prune50: proxy-accuracy change (search split, <= ~0)
        with this unit at 2-bit weights, 2-bit activations, W4A4, or half its channels,
        after calibration only (no KD steps: probes must be cheap and are only features).
    hessian_trace: trace of the loss Hessian over the unit's weights (Hutchinson estimate,
        HAWQ-V2), on train-split samples.
    weight_count: the unit's weights, so per-parameter curvature can be derived.

Hessian-vector products come from double backward ("exact") where every op of the model
has a second derivative; models with ops that lack one (hard-sigmoid gates, fused
attention kernels) get them from central differences of first-order gradients
("finite-difference", in float64). ``ModelProbes.hessian_estimator`` records which.
On piecewise-linear activations (ReLU) the finite difference also sees the kinks that
double backward treats as flat, so the two estimators agree closely only on smooth models.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from metacompress.compressors.io import write_text_atomic
from metacompress.compressors.plan import Plan
from metacompress.compressors.metrics import logits, task_loss
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.errors import CacheCorrupted, MetacompressError

log = logging.getLogger(__name__)

PROBES_FORMAT = 2  # 2: records the Hessian estimator
HESSIAN_SAMPLES = 16
HESSIAN_BATCH = 512
# A Hessian-vector product costs a few forward passes over the batch: on larger models the
# batch shrinks to keep batch x MACs at this (512 samples of the largest zoo model, 12.3M
# MACs, fit), never below HESSIAN_MIN_BATCH. On a ResNet-18 at 64x64 (148M MACs) 108
# samples rank its 13 units' traces as 512 do (Spearman 1.0) in a fifth of the time.
HESSIAN_SAMPLE_MACS = 16e9
HESSIAN_MIN_BATCH = 64
HESSIAN_ESTIMATORS = ("auto", "exact", "finite-difference")
# central-difference step as a fraction of the weights' RMS, per unit of the probe vector
FINITE_DIFFERENCE_STEP = 1e-4


@dataclass(frozen=True)
class UnitProbes:
    """Sensitivity of one unit (see the module docstring for each field)."""

    drop_w2: float = 0.0
    drop_a2: float = 0.0
    drop_w4a4: float = 0.0
    drop_prune50: float = 0.0
    hessian_trace: float = 0.0
    weight_count: int = 0


@dataclass(frozen=True)
class ModelProbes:
    """Probes of every unit of one model, bound to its structure and weights by a fingerprint."""

    fingerprint: str
    units: tuple[UnitProbes, ...]
    hessian_estimator: str = "exact"

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": PROBES_FORMAT,
                "fingerprint": self.fingerprint,
                "hessian_estimator": self.hessian_estimator,
                "units": [asdict(u) for u in self.units],
            }
        )

    @classmethod
    def from_json(cls, text: str, where: str = "probe cache") -> "ModelProbes":
        try:
            data = json.loads(text)
            if data["format"] != PROBES_FORMAT:
                raise KeyError("format")
            return cls(data["fingerprint"], tuple(UnitProbes(**u) for u in data["units"]), data["hessian_estimator"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CacheCorrupted(f"{where} is corrupt ({exc}); delete it and it will be recomputed") from exc


def _single_unit_plan(evaluator: ModelEvaluator, unit_index: int, prune: float, w_bits: int, a_bits: int) -> Plan:
    spec = evaluator.spec
    ratios = [prune if u.index == unit_index else 0.0 for u in spec.units]
    wb = [w_bits if u.index == unit_index else 8 for u in spec.units]
    ab = [a_bits if u.index == unit_index else 8 for u in spec.units]
    return Plan.from_choices(spec, ratios, wb, ab)


def hessian_traces(evaluator: ModelEvaluator, samples: int = HESSIAN_SAMPLES, seed: int = 0, estimator: str = "auto") -> tuple[list[float], str]:
    """Hutchinson estimate of tr(H) per unit over its layers' weights (HAWQ-V2, Dong et al. 2020).

    One Hessian-vector product per sample serves every unit at once: with a Rademacher
    vector v, E[v_u . (H v)_u] is the trace of unit u's diagonal block. Both estimators
    draw the same vectors for the same seed.

    Args:
        evaluator: the model and its train split (the first ``hessian_batch(spec)`` samples).
        samples: Rademacher vectors.
        seed: seeds the vectors.
        estimator: ``"exact"`` (double backward), ``"finite-difference"`` (central
            differences of gradients), or ``"auto"``: exact, and finite differences when
            an op of the model has no second derivative.

    Returns:
        Per-unit traces and the estimator that produced them.

    Raises:
        MetacompressError: an unknown ``estimator``.
    """
    if estimator not in HESSIAN_ESTIMATORS:
        raise MetacompressError(f"Hessian estimator {estimator!r} is unknown; use one of {', '.join(HESSIAN_ESTIMATORS)}")
    spec = evaluator.spec
    batch = hessian_batch(spec.macs())
    x, y = evaluator.data.train.x[:batch], evaluator.data.train.y[:batch]
    layers = [layer.name for layer in spec.layers]

    def traces_from(pairs: Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]) -> list[float]:
        traces = [0.0] * len(spec.units)
        for vs, hvs in pairs:
            for layer, v, hv in zip(spec.layers, vs, hvs):
                traces[layer.unit] += float((v * hv).sum()) / samples
        return traces

    if estimator in ("auto", "exact"):
        try:
            return traces_from(_exact_hvps(evaluator.model, layers, x, y, samples, seed, evaluator.output_kind)), "exact"
        except (RuntimeError, NotImplementedError) as exc:  # an op without a second derivative
            if estimator == "exact":
                raise
            log.info("double backward is unavailable (%s); Hessian traces use finite differences of gradients", exc)
    return traces_from(_finite_difference_hvps(evaluator.model, layers, x, y, samples, seed, evaluator.output_kind)), "finite-difference"


def hessian_batch(macs: int) -> int:
    """Samples each Hessian-vector product runs on, for a model of ``macs`` per sample (see ``HESSIAN_SAMPLE_MACS``)."""
    return int(min(HESSIAN_BATCH, max(HESSIAN_MIN_BATCH, HESSIAN_SAMPLE_MACS // max(macs, 1))))


def _rademacher(weights: list[torch.Tensor], samples: int, seed: int) -> Iterator[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(samples):
        yield [(torch.randint(0, 2, w.shape, generator=generator) * 2 - 1).to(device=w.device, dtype=w.dtype) for w in weights]  # drawn on the CPU: the same vectors on every device


def _with_weight_grads(model: torch.nn.Module, layers: list[str], dtype: torch.dtype) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A private copy of the model in ``dtype`` whose only trainable tensors are the layers' weights."""
    model = copy.deepcopy(model).eval().to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    weights = [model.get_submodule(name).weight for name in layers]
    for w in weights:
        w.requires_grad_(True)
    return model, weights


def _weight_grads(outputs, weights: list[torch.Tensor], **kwargs) -> tuple[torch.Tensor, ...]:
    """``torch.autograd.grad`` with zeros for weights the outputs do not depend on.

    A layer whose output never reaches the model's output (WaveNet's last residual conv, when
    only the skip sum is read) has no curvature: its trace is 0, not an error.
    """
    return torch.autograd.grad(outputs, weights, allow_unused=True, materialize_grads=True, **kwargs)


def _exact_hvps(model, layers, x, y, samples, seed, kind: str = "logits") -> Iterator[tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]]:
    """(v, Hv) pairs by double backward (Pearlmutter's trick through autograd)."""
    model, weights = _with_weight_grads(model, layers, torch.float32)
    grads = _weight_grads(task_loss(kind, logits(model(x)), y), weights, create_graph=True)
    live = [i for i, g in enumerate(grads) if g.requires_grad]  # a layer with a linear effect has a constant gradient
    for vs in _rademacher(weights, samples, seed):
        hvs = [torch.zeros_like(w) for w in weights]
        if live:
            products = _weight_grads([grads[i] for i in live], weights, grad_outputs=[vs[i] for i in live], retain_graph=True)
            hvs = list(products)
        yield vs, hvs


def _finite_difference_hvps(model, layers, x, y, samples, seed, kind: str = "logits") -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """(v, Hv) pairs with Hv ~ (g(w + eps v) - g(w - eps v)) / (2 eps), in float64.

    Needs only first-order gradients, so it works for every differentiable model; float64
    keeps the difference's rounding error far below the curvature being measured.
    """
    model, weights = _with_weight_grads(model, layers, torch.float64)
    x = x.to(torch.float64) if x.is_floating_point() else x  # integer token ids stay ids
    originals = [w.detach().clone() for w in weights]
    rms = math.sqrt(sum(float((w**2).sum()) for w in originals) / max(sum(w.numel() for w in originals), 1))
    eps = FINITE_DIFFERENCE_STEP * max(rms, 1e-12)  # |v| = 1 per entry, so each weight moves by eps

    def gradient(sign: float, vs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            for w, w0, v in zip(weights, originals, vs):
                w.copy_(w0 + sign * eps * v)
        return _weight_grads(task_loss(kind, logits(model(x)), y), weights)

    for vs in _rademacher(weights, samples, seed):
        plus, minus = gradient(1.0, vs), gradient(-1.0, vs)
        yield vs, [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def compute_probes(evaluator: ModelEvaluator, seed: int = 0, progress: Callable[[int, int], None] | None = None) -> ModelProbes:
    """Run every probe for every non-frozen unit (4 proxy evaluations per unit + HVPs).

    The single-unit plans are scored as one batch (``ModelEvaluator.proxy_accuracies``), so
    an evaluator given a process or Ray executor probes its units in parallel; the values
    are the same on every executor. ``progress(done, total)`` follows the evaluations (on a
    large model they take minutes).
    """
    spec = evaluator.spec
    traces, estimator = hessian_traces(evaluator, seed=seed)
    probed = [unit for unit in spec.units if not unit.frozen]
    plans = []
    for unit in probed:
        half = 0.5 if unit.prunable and unit.channels // unit.channel_step >= 2 else 0.0
        plans += [_single_unit_plan(evaluator, unit.index, prune, w, a) for prune, w, a in ((0.0, 2, 8), (0.0, 8, 2), (0.0, 4, 4), (half, 8, 8))]
    if progress is not None:
        progress(0, len(plans))  # the Hessian traces are done
    drops = iter([score - evaluator.base_search_accuracy for score in evaluator.proxy_accuracies(plans, finetune_steps=0, progress=progress)])
    units = []
    for unit in spec.units:
        weight_count = sum(l.weight_count(l.in_channels, l.out_channels) for l in spec.layers_of(unit.index))
        if unit.frozen:
            units.append(UnitProbes(hessian_trace=traces[unit.index], weight_count=weight_count))
            continue
        units.append(
            UnitProbes(
                drop_w2=next(drops),
                drop_a2=next(drops),
                drop_w4a4=next(drops),
                drop_prune50=next(drops),
                hessian_trace=traces[unit.index],
                weight_count=weight_count,
            )
        )
    return ModelProbes(probe_fingerprint(evaluator), tuple(units), estimator)


def probe_fingerprint(evaluator: ModelEvaluator) -> str:
    """Structure and weights of the model: a retrained model never reuses stale probes."""
    digest = hashlib.sha256(evaluator.spec.fingerprint.encode())
    for name, tensor in sorted(evaluator.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_compute_probes(evaluator: ModelEvaluator, cache_path: Path | None, seed: int = 0) -> ModelProbes:
    """Probes from ``cache_path`` if present, of this format and made for this very model, else computed and cached."""
    if cache_path is not None and cache_path.exists():
        text = cache_path.read_text()
        if _cached_format(text) == PROBES_FORMAT:  # an older format's probes are stale: recomputed below
            probes = ModelProbes.from_json(text, str(cache_path))
            if probes.fingerprint == probe_fingerprint(evaluator):
                return probes
    probes = compute_probes(evaluator, seed)
    if cache_path is not None:
        write_text_atomic(cache_path, probes.to_json())
    return probes


def _cached_format(text: str) -> int | None:
    """The format a cache file declares (``PROBES_FORMAT`` for unreadable files, so they are reported)."""
    try:
        return int(json.loads(text)["format"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return PROBES_FORMAT

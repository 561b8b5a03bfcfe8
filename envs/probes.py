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
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from metacompress.compressors.io import write_text_atomic
from metacompress.compressors.plan import Plan
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.errors import CacheCorrupted

PROBES_FORMAT = 1
HESSIAN_SAMPLES = 16
HESSIAN_BATCH = 512


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

    def to_json(self) -> str:
        return json.dumps({"format": PROBES_FORMAT, "fingerprint": self.fingerprint, "units": [asdict(u) for u in self.units]})

    @classmethod
    def from_json(cls, text: str, where: str = "probe cache") -> "ModelProbes":
        try:
            data = json.loads(text)
            if data["format"] != PROBES_FORMAT:
                raise KeyError("format")
            return cls(data["fingerprint"], tuple(UnitProbes(**u) for u in data["units"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CacheCorrupted(f"{where} is corrupt ({exc}); delete it and it will be recomputed") from exc


def _single_unit_plan(evaluator: ModelEvaluator, unit_index: int, prune: float, w_bits: int, a_bits: int) -> Plan:
    spec = evaluator.spec
    ratios = [prune if u.index == unit_index else 0.0 for u in spec.units]
    wb = [w_bits if u.index == unit_index else 8 for u in spec.units]
    ab = [a_bits if u.index == unit_index else 8 for u in spec.units]
    return Plan.from_choices(spec, ratios, wb, ab)


def hessian_traces(evaluator: ModelEvaluator, samples: int = HESSIAN_SAMPLES, seed: int = 0) -> list[float]:
    """Hutchinson estimate of tr(H) per unit over its layers' weights (HAWQ-V2, Dong et al. 2020).

    One Hessian-vector product per sample serves every unit at once: with a Rademacher
    vector v, E[v_u . (H v)_u] is the trace of unit u's diagonal block.
    """
    model = copy.deepcopy(evaluator.model).eval()
    spec = evaluator.spec
    weights = [model.get_submodule(layer.name).weight for layer in spec.layers]
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    x, y = evaluator.data.train.x[:HESSIAN_BATCH], evaluator.data.train.y[:HESSIAN_BATCH]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    traces = [0.0] * len(spec.units)
    for _ in range(samples):
        vs = [torch.randint(0, 2, w.shape, generator=generator).float() * 2 - 1 for w in weights]
        hvs = torch.autograd.grad(grads, weights, grad_outputs=vs, retain_graph=True)
        for layer, v, hv in zip(spec.layers, vs, hvs):
            traces[layer.unit] += float((v * hv).sum()) / samples
    return traces


def compute_probes(evaluator: ModelEvaluator, seed: int = 0) -> ModelProbes:
    """Run every probe for every non-frozen unit (4 proxy evaluations per unit + HVPs)."""
    spec = evaluator.spec
    traces = hessian_traces(evaluator, seed=seed)
    units = []
    for unit in spec.units:
        weight_count = sum(l.weight_count(l.in_channels, l.out_channels) for l in spec.layers_of(unit.index))
        if unit.frozen:
            units.append(UnitProbes(hessian_trace=traces[unit.index], weight_count=weight_count))
            continue
        half = 0.5 if unit.prunable and unit.channels // unit.channel_step >= 2 else 0.0

        def drop(prune: float, w: int, a: int) -> float:
            return evaluator.proxy_change(_single_unit_plan(evaluator, unit.index, prune, w, a), finetune_steps=0)

        units.append(
            UnitProbes(
                drop_w2=drop(0.0, 2, 8),
                drop_a2=drop(0.0, 8, 2),
                drop_w4a4=drop(0.0, 4, 4),
                drop_prune50=drop(half, 8, 8),
                hessian_trace=traces[unit.index],
                weight_count=weight_count,
            )
        )
    return ModelProbes(probe_fingerprint(evaluator), tuple(units))


def probe_fingerprint(evaluator: ModelEvaluator) -> str:
    """Structure and weights of the model: a retrained model never reuses stale probes."""
    digest = hashlib.sha256(evaluator.spec.fingerprint.encode())
    for name, tensor in sorted(evaluator.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_compute_probes(evaluator: ModelEvaluator, cache_path: Path | None, seed: int = 0) -> ModelProbes:
    """Probes from ``cache_path`` if present and made for this very model, else computed and cached."""
    if cache_path is not None and cache_path.exists():
        probes = ModelProbes.from_json(cache_path.read_text(), str(cache_path))
        if probes.fingerprint == probe_fingerprint(evaluator):
            return probes
    probes = compute_probes(evaluator, seed)
    if cache_path is not None:
        write_text_atomic(cache_path, probes.to_json())
    return probes

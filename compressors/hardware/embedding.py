"""A HELP-style hardware embedding: what the agent sees of the target.

HELP (Lee et al., NeurIPS 2021) describes a device by the latencies of a few fixed probe
networks. Here the probes are ten single layers spanning arithmetic intensity (large and
small feature maps, pointwise, depthwise, linear), each priced on the hardware at a few
bit-widths and at half its channels. Every feature is a *ratio* of costs on the same
hardware, so a 1 ms CPU and a 1 us GPU with the same cost structure embed alike and the
policy transfers across hardware through structure, not speed.

Layout (``EMBEDDING_DIM`` = 90 floats, each in [-1, 1]):

=======  ====================================================================  ===========
index    feature                                                               range
=======  ====================================================================  ===========
0-39     probe p, bits b in (W4A4, W2A2, W8A4, W4A8): log2(lat_b / lat_W8A8)/8  [-1, 0]
40-49    probe p: log2(lat(half channels) / lat(full)) / 8                      [-1, 0]
50-59    probe p: log10(probe's share of the summed W8A8 probe latency) / 4     [-1, 0]
60-69    probe p: log2(energy_W4A4 / energy_W8A8) / 8 (0 without energy)        [-1, 0]
70-79    probe p: log10(share of summed W8A8 probe energy) / 4 (0 w/o energy)   [-1, 0]
80-86    supported-bit mask for 2, 3, 4, 5, 6, 7, 8                             {0, 1}
87       sparse-capable flag                                                    {0, 1}
88       has-energy flag                                                        {0, 1}
89       log10(summed W8A8 probe latency in ms) / 4                             [-1, 1]
=======  ====================================================================  ===========

Log-ratios are clipped to [-8, 0] (costs are monotone, so a narrower width is never
dearer; 2^-8 is below any real speedup), log-shares to [-4, 0]; the total to 1e-4-1e4 ms.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from metacompress.compressors.hardware.base import ALL_BITS, Hardware
from metacompress.compressors.hardware.reference import make_layer
from metacompress.compressors.spec import LayerSpec

PROBE_LAYERS: tuple[LayerSpec, ...] = (
    make_layer("probe0.conv3x3.bigmap", "conv", 16, 16, 3, 1, 64),   # activation-heavy
    make_layer("probe1.conv3x3.mid", "conv", 64, 64, 3, 1, 16),      # balanced
    make_layer("probe2.conv3x3.weights", "conv", 256, 256, 3, 1, 4), # weight-heavy
    make_layer("probe3.stem7x7", "conv", 3, 16, 7, 2, 64),           # few input channels
    make_layer("probe4.pointwise", "conv", 64, 256, 1, 1, 16),
    make_layer("probe5.pointwise.weights", "conv", 512, 512, 1, 1, 2),
    make_layer("probe6.depthwise.bigmap", "depthwise", 128, 128, 3, 1, 32),
    make_layer("probe7.depthwise.small", "depthwise", 512, 512, 3, 1, 8),
    make_layer("probe8.linear", "linear", 1024, 1024),               # memory-bound GEMV
    make_layer("probe9.classifier", "linear", 256, 10),              # overhead-bound
)
PROBE_BITS = ((4, 4), (2, 2), (8, 4), (4, 8))
PROBE_FRACTIONS = (0.5, 1.0)  # the kept fractions a measured table must hold for each probe
RATIO_CLIP_LOG2 = 8.0
SHARE_CLIP_LOG10 = 4.0
TOTAL_CLIP_LOG10 = 4.0
EMBEDDING_DIM = len(PROBE_LAYERS) * (len(PROBE_BITS) + 2 + 2) + len(ALL_BITS) + 3


def probe_half_shape(layer: LayerSpec) -> tuple[int, int]:
    """The probe's shape with half its channels kept (an image-like input of <= 4 channels stays)."""
    kept_out = max(1, round(layer.out_channels * 0.5))
    if layer.kind == "depthwise":
        return kept_out, kept_out
    kept_in = layer.in_channels if layer.in_channels <= 4 else max(1, round(layer.in_channels * 0.5))
    return kept_in, kept_out


def _log_ratio(numerator: float, denominator: float) -> float:
    return float(np.clip(np.log2(numerator / denominator), -RATIO_CLIP_LOG2, 0.0) / RATIO_CLIP_LOG2)


def _log_shares(costs: np.ndarray) -> np.ndarray:
    shares = costs / costs.sum()
    return np.clip(np.log10(np.maximum(shares, 1e-12)), -SHARE_CLIP_LOG10, 0.0) / SHARE_CLIP_LOG10


@lru_cache(maxsize=512)
def hardware_embedding(hw: Hardware) -> np.ndarray:
    """The fixed-length embedding of ``hw`` (layout in the module docstring); cached, read-only.

    Raises:
        HardwareError: if ``hw`` cannot price a probe (e.g. a user's table without probe rows;
            ``metacompress hardware measure`` always adds them).
    """
    lat_blocks, prune, lat_full, eng_ratio, eng_full = [], [], [], [], []
    for probe in PROBE_LAYERS:
        full = (probe.in_channels, probe.out_channels)
        base = hw.layer_latency_ms(probe, *full, 8, 8)
        lat_full.append(base)
        lat_blocks.append([_log_ratio(hw.layer_latency_ms(probe, *full, w, a), base) for w, a in PROBE_BITS])
        prune.append(_log_ratio(hw.layer_latency_ms(probe, *probe_half_shape(probe), 8, 8), base))
        if hw.has_energy:
            e8 = hw.layer_energy_mj(probe, *full, 8, 8)
            eng_full.append(e8)
            eng_ratio.append(_log_ratio(hw.layer_energy_mj(probe, *full, 4, 4), e8) if e8 > 0 else 0.0)
    n = len(PROBE_LAYERS)
    energy_part = (np.concatenate([eng_ratio, _log_shares(np.array(eng_full))])
                   if hw.has_energy and sum(eng_full) > 0 else np.zeros(2 * n))
    total_ms = float(np.sum(lat_full))
    descriptor = [1.0 if b in hw.supported_bits else 0.0 for b in ALL_BITS]
    descriptor += [float(hw.supports_sparsity), float(hw.has_energy and sum(eng_full) > 0),
                   float(np.clip(np.log10(total_ms), -TOTAL_CLIP_LOG10, TOTAL_CLIP_LOG10) / TOTAL_CLIP_LOG10)]
    vector = np.concatenate([np.array(lat_blocks).T.reshape(-1), prune, _log_shares(np.array(lat_full)),
                             energy_part, descriptor]).astype(np.float32)
    vector.setflags(write=False)
    return vector


def embedding_feature_names() -> list[str]:
    """A name per embedding index, in the order of the module docstring's table."""
    names = [f"lat_W{w}A{a}/W8A8:{p.name}" for w, a in PROBE_BITS for p in PROBE_LAYERS]
    names += [f"lat_half/full:{p.name}" for p in PROBE_LAYERS]
    names += [f"lat_share:{p.name}" for p in PROBE_LAYERS]
    names += [f"energy_W4A4/W8A8:{p.name}" for p in PROBE_LAYERS]
    names += [f"energy_share:{p.name}" for p in PROBE_LAYERS]
    names += [f"supports_{b}bit" for b in ALL_BITS] + ["sparse", "has_energy", "log10_total_probe_ms"]
    return names

"""A parametric roofline family of hardware targets, with five archetypes and their samplers.

One layer costs, per sample, when the target runs batches of ``batch`` samples
(Williams et al., roofline, CACM 2009)::

    latency_s = max(compute_s, dram_bytes / bandwidth) + overhead / batch
    compute_s = macs * sparse_factor / (peak_int8_macs_per_s * gain(w, a) * kind_efficiency)
    dram_bytes = weights * w / 8 / batch + activations * spill * a / 8
    energy_pj = macs * sparse_factor * e_mac_pj * energy_law(w, a) + dram_bytes * e_dram_pj_per_byte

where ``w`` and ``a`` are the *executed* bits (rounded up to a supported width) and
activations are the layer's input plus output elements. Activations that fit the on-chip
buffer never touch DRAM; the fraction that does not, ``spill = max(0, 1 - buffer_bytes /
(batch * activation elements))``, is streamed at ``a`` bits. The fit is judged in byte slots (on-chip
buffers hold one activation per byte lane; DRAM transfers are packed), so the memory time
of a layer halves exactly when its bits halve and the per-layer W8A8/W4A4 latency ratio
stays within 1-4x, as in the published BISMO and BitFusion tables. (Judging the fit at the
packed width instead made single layers 20x cheaper for one halving of bits: a cliff no
public table shows.) Weights are streamed from DRAM (or flash) once per batch and the
per-layer overhead is paid once per batch: at batch 1 nothing amortises them (edge
targets), at batch 16 (HAQ's cloud setting) both shrink sixteen-fold per sample.

Precision laws (``gain`` = compute throughput relative to W8A8, ``energy_law`` = MAC energy
relative to W8A8):

==============  ===================================  ================  ==========================
archetype       gain(w, a)                           energy_law        supported bits
==============  ===================================  ================  ==========================
bit-serial      64 / (w * a)   (BISMO)               w * a / 64        any of 2..8
brick-fused     64 / (w * a), w, a in {2, 4, 8}      w * a / 64        2, 4, 8 (BitFusion)
fixed-int       int4_speedup if w, a <= 4, else 1    1 / gain          8, or 4 and 8
mcu             1 (operands unpacked to int16 SIMD)  1                 8, 4/8 or 2/4/8
sparse          as fixed-int                         1 / gain          8, or 4 and 8
==============  ===================================  ================  ==========================

Sparse law (structured pruning): our pruning removes whole channels, so the shape shrinks
on every target. A sparse-capable target (``sparse_efficiency`` = eta > 0) additionally
runs the remaining MACs faster by the pruned fraction ``p = 1 - macs(kept) / macs(full)``:
``sparse_factor = 1 - eta * p`` (1 on every other target). Compute time, ``macs * (1 - eta*p)``,
stays monotone in the kept channels for eta < 1. With eta = 0.5 a layer pruned by half
runs its remaining half 1.33x faster: the Ampere 2:4 figure (2x math at 50% sparsity)
discounted for a structured pattern the hardware only partly exploits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from metacompress.compressors.hardware.base import Hardware, check_supported_bits
from metacompress.compressors.spec import LayerSpec
from metacompress.errors import HardwareError

ARCHETYPES = ("bit-serial", "brick-fused", "fixed-int", "mcu", "sparse")
ARCHETYPE_LAWS = {
    "bit-serial": "Bit-serial (BISMO-like): compute throughput scales as 64/(w*a), so W4A4 runs a "
                  "compute-bound layer 4x faster than W8A8 and every width 2-8 is native.",
    "brick-fused": "Brick-fused (BitFusion-like): bits round up to 2, 4 or 8, so a 6-bit layer costs what an "
                   "8-bit one does; between those, throughput scales as 64/(w*a).",
    "fixed-int": "Fixed-int (CPU/GPU): int8 kernels, plus an optional int4 path (both operands <= 4 bits) "
                 "that gains int4_speedup < 2x on compute; memory traffic still shrinks with bits.",
    "mcu": "Microcontroller: compute is bit-independent (operands unpacked to int16 SIMD lanes) and slow "
           "flash bandwidth carries packed weights, so memory-bound layers speed up linearly with bits.",
    "sparse": "Sparse-capable (Ampere-like): fixed-int precision law, and pruning a fraction p of a layer's "
              "MACs also runs the rest 1/(1 - eta*p) faster: beyond the shape reduction.",
}
_INT_PATH_BITS = (4, 8)
PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class RooflineHardware(Hardware):
    """A roofline target: ``max(compute, memory) + overhead`` per layer, with its archetype's precision law.

    The laws, one sentence each, are in ``ARCHETYPE_LAWS`` (and in ``describe()["law"]``);
    the formulas are in the module docstring.

    Args:
        name: short name, e.g. ``"bismo-edge"``.
        archetype: one of ``ARCHETYPES``; selects the precision law.
        peak_macs_per_s: peak W8A8 multiply-accumulates per second (1e8-1e14).
        dram_gb_per_s: off-chip (DRAM or flash) bandwidth in GB/s (0.05-1000).
        buffer_bytes: on-chip buffer; activations that fit never touch DRAM (32 KB-32 MB).
        supported_bits: widths executed natively, a subset of 2..8 holding 8.
        overhead_us: fixed per-layer cost (kernel launch, configuration) in microseconds.
        e_mac_pj: energy of one W8A8 MAC in picojoules.
        e_dram_pj_per_byte: energy of one off-chip byte in picojoules.
        depthwise_efficiency: fraction of peak a depthwise conv reaches, in (0, 1].
        linear_efficiency: fraction of peak a (batch-1, GEMV-like) linear layer reaches, in (0, 1].
        int4_speedup: fixed-int/sparse only: compute gain of the int4 path over int8, in [1, 2].
        sparse_efficiency: eta of the sparse law, in [0, 1); 0 means no sparsity support.
        batch: samples per inference call (1-1024): amortises weights and overhead.
        notes: the public figures the parameters are calibrated to.
    """

    name: str
    archetype: str
    peak_macs_per_s: float
    dram_gb_per_s: float
    buffer_bytes: int
    supported_bits: tuple[int, ...]
    overhead_us: float = 5.0
    e_mac_pj: float = 0.25
    e_dram_pj_per_byte: float = 160.0
    depthwise_efficiency: float = 0.3
    linear_efficiency: float = 0.5
    int4_speedup: float = 1.0
    sparse_efficiency: float = 0.0
    batch: int = 1
    notes: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.archetype not in ARCHETYPES:
            problems.append(f"archetype {self.archetype!r} is unknown (use one of {', '.join(ARCHETYPES)})")
        object.__setattr__(self, "supported_bits", check_supported_bits(self.supported_bits, repr(self.name)))
        for field_name in ("peak_macs_per_s", "dram_gb_per_s", "buffer_bytes", "e_mac_pj", "e_dram_pj_per_byte"):
            value = getattr(self, field_name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                problems.append(f"{field_name}={value!r} must be a positive finite number")
        if not (math.isfinite(self.overhead_us) and self.overhead_us >= 0):
            problems.append(f"overhead_us={self.overhead_us!r} must be >= 0")
        for field_name in ("depthwise_efficiency", "linear_efficiency"):
            value = getattr(self, field_name)
            if not 0 < value <= 1:
                problems.append(f"{field_name}={value!r} must be in (0, 1]")
        if not (isinstance(self.batch, int) and 1 <= self.batch <= 1024):
            problems.append(f"batch={self.batch!r} must be an integer from 1 to 1024")
        if not 0 <= self.sparse_efficiency < 1:
            problems.append(f"sparse_efficiency={self.sparse_efficiency!r} must be in [0, 1)")
        if not 1 <= self.int4_speedup <= 2:
            problems.append(f"int4_speedup={self.int4_speedup!r} must be in [1, 2] (real int4 paths gain less than 2x)")
        if self.archetype in ("fixed-int", "sparse") and not set(self.supported_bits) <= set(_INT_PATH_BITS):
            problems.append(f"a {self.archetype} target runs int8 and optionally int4, not {list(self.supported_bits)}; use (8,) or (4, 8)")
        if self.archetype == "brick-fused" and not set(self.supported_bits) <= {2, 4, 8}:
            problems.append(f"a brick-fused target fuses 2-bit bricks in powers of two, so its bits are a subset of 2, 4, 8, not {list(self.supported_bits)}")
        if self.archetype == "sparse" and self.sparse_efficiency <= 0:
            problems.append("a sparse target needs sparse_efficiency > 0")
        if problems:
            raise HardwareError(f"hardware {self.name!r} is invalid: " + "; ".join(problems))

    # the law -----------------------------------------------------------------------------
    @property
    def supports_sparsity(self) -> bool:
        return self.sparse_efficiency > 0

    def compute_gain(self, w_bits: int, a_bits: int) -> float:
        """Compute throughput at the executed ``(w_bits, a_bits)`` relative to W8A8."""
        w, a = self.executed_bits(w_bits), self.executed_bits(a_bits)
        if self.archetype in ("bit-serial", "brick-fused"):
            return 64.0 / (w * a)
        if self.archetype in ("fixed-int", "sparse"):
            return self.int4_speedup if max(w, a) <= 4 else 1.0
        return 1.0  # mcu

    def mac_energy_factor(self, w_bits: int, a_bits: int) -> float:
        """Energy of one MAC at the executed bits relative to a W8A8 MAC."""
        if self.archetype == "mcu":
            return 1.0
        if self.archetype in ("bit-serial", "brick-fused"):
            return self.executed_bits(w_bits) * self.executed_bits(a_bits) / 64.0
        return 1.0 / self.compute_gain(w_bits, a_bits)

    def kind_efficiency(self, layer: LayerSpec) -> float:
        """Fraction of peak the layer's op kind reaches (depthwise and GEMV map poorly)."""
        return {"depthwise": self.depthwise_efficiency, "linear": self.linear_efficiency}.get(layer.kind, 1.0)

    def effective_macs(self, layer: LayerSpec, kept_in: int, kept_out: int) -> float:
        """MACs after the sparse law: ``macs * (1 - eta * pruned_fraction)``."""
        macs = layer.macs(kept_in, kept_out)
        if self.sparse_efficiency <= 0 or macs == 0:
            return float(macs)
        full = layer.macs(layer.in_channels, layer.out_channels)
        pruned = max(0.0, 1.0 - macs / full) if full else 0.0
        return macs * (1.0 - self.sparse_efficiency * pruned)

    @property
    def overhead_s_per_sample(self) -> float:
        """The per-layer overhead, shared by the samples of one batch."""
        return self.overhead_us * 1e-6 / self.batch

    def dram_bytes(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        """Off-chip bytes per sample: weights (once per batch), plus the activations that overflow the buffer."""
        w, a = self.executed_bits(w_bits), self.executed_bits(a_bits)
        weight_bytes = layer.weight_count(kept_in, kept_out) * w / 8.0 / self.batch
        act_elems = layer.input_elems(kept_in) + layer.output_elems(kept_out)
        batch_elems = act_elems * self.batch
        spill = max(0.0, 1.0 - self.buffer_bytes / batch_elems) if batch_elems else 0.0  # buffer slots are bytes
        return weight_bytes + act_elems * a / 8.0 * spill

    def layer_latency_ms(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        throughput = self.peak_macs_per_s * self.compute_gain(w_bits, a_bits) * self.kind_efficiency(layer)
        compute_s = self.effective_macs(layer, kept_in, kept_out) / throughput
        memory_s = self.dram_bytes(layer, kept_in, kept_out, w_bits, a_bits) / (self.dram_gb_per_s * 1e9)
        return (max(compute_s, memory_s) + self.overhead_s_per_sample) * 1e3

    def layer_energy_mj(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        mac_pj = self.effective_macs(layer, kept_in, kept_out) * self.e_mac_pj * self.mac_energy_factor(w_bits, a_bits)
        dram_pj = self.dram_bytes(layer, kept_in, kept_out, w_bits, a_bits) * self.e_dram_pj_per_byte
        return (mac_pj + dram_pj) / PJ_PER_MJ

    def describe(self) -> dict:
        data = asdict(self)
        data["supported_bits"] = list(self.supported_bits)
        data["type"] = type(self).__name__
        data["ridge_macs_per_byte"] = self.peak_macs_per_s / (self.dram_gb_per_s * 1e9)
        data["law"] = ARCHETYPE_LAWS[self.archetype]
        return data


# sampling ------------------------------------------------------------------------------
# Log-uniform ranges per archetype (research notes section 4.4, widened around the presets):
# peak W8A8 MAC/s, bandwidth GB/s, buffer bytes, overhead us, e_mac pJ, e_dram pJ/byte.
SAMPLE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "bit-serial": {"peak_macs_per_s": (1e10, 1e12), "dram_gb_per_s": (2, 100), "buffer_bytes": (64e3, 16e6),
                   "overhead_us": (2, 30), "e_mac_pj": (0.1, 2), "e_dram_pj_per_byte": (50, 250)},
    "brick-fused": {"peak_macs_per_s": (1e10, 1e12), "dram_gb_per_s": (2, 100), "buffer_bytes": (64e3, 16e6),
                    "overhead_us": (1, 20), "e_mac_pj": (0.05, 1), "e_dram_pj_per_byte": (50, 250)},
    "fixed-int": {"peak_macs_per_s": (1e10, 1e14), "dram_gb_per_s": (5, 1000), "buffer_bytes": (256e3, 32e6),
                  "overhead_us": (1, 50), "e_mac_pj": (0.1, 5), "e_dram_pj_per_byte": (20, 200)},
    "mcu": {"peak_macs_per_s": (1e8, 2e9), "dram_gb_per_s": (0.05, 1), "buffer_bytes": (32e3, 1e6),
            "overhead_us": (5, 50), "e_mac_pj": (5, 100), "e_dram_pj_per_byte": (10, 100)},
    "sparse": {"peak_macs_per_s": (1e11, 1e14), "dram_gb_per_s": (50, 2000), "buffer_bytes": (1e6, 32e6),
               "overhead_us": (1, 20), "e_mac_pj": (0.1, 2), "e_dram_pj_per_byte": (20, 200)},
}
# Uniform ranges: depthwise and linear efficiency, int4 path gain, sparse eta.
EFFICIENCY_RANGES = {"depthwise_efficiency": (0.05, 0.6), "linear_efficiency": (0.2, 1.0),
                     "int4_speedup": (1.2, 1.9), "sparse_efficiency": (0.2, 0.7)}
# Batch sizes a sampled target runs (a microcontroller serves one sample at a time).
_BATCH_CHOICES = {"bit-serial": (1, 1, 4, 16), "brick-fused": (1, 1, 4, 16), "fixed-int": (1, 1, 8, 32),
                  "mcu": (1,), "sparse": (1, 8, 32)}
_BIT_CHOICES = {
    "bit-serial": [tuple(range(2, 9)), (2, 4, 8), (4, 6, 8), (2, 3, 4, 5, 6, 7, 8)],
    "brick-fused": [(2, 4, 8), (2, 4, 8), (4, 8)],
    "fixed-int": [(8,), (4, 8)],
    "mcu": [(8,), (4, 8), (2, 4, 8)],
    "sparse": [(8,), (4, 8)],
}


def sample_hardware(archetype: str, rng_or_seed: int | np.random.Generator, name: str | None = None) -> RooflineHardware:
    """A random, always-valid target of ``archetype`` for training diversity.

    Rates and energies are log-uniform over ``SAMPLE_RANGES[archetype]``; efficiencies are
    uniform over ``EFFICIENCY_RANGES``; the supported bits and the batch size are drawn from
    the archetype's plausible sets. The same seed gives the same target.

    Args:
        archetype: one of ``ARCHETYPES``.
        rng_or_seed: an integer seed or a ``numpy.random.Generator`` (advanced in place).
        name: the target's name; default ``"<archetype>-s<seed>"`` or ``"<archetype>-sampled"``.

    Raises:
        HardwareError: if the archetype is unknown.
    """
    if archetype not in ARCHETYPES:
        raise HardwareError(f"archetype {archetype!r} is unknown; use one of {', '.join(ARCHETYPES)}")
    if isinstance(rng_or_seed, np.random.Generator):
        rng, default_name = rng_or_seed, f"{archetype}-sampled"
    else:
        rng, default_name = np.random.default_rng(int(rng_or_seed)), f"{archetype}-s{int(rng_or_seed)}"
    values: dict = {}
    for key, (low, high) in SAMPLE_RANGES[archetype].items():
        values[key] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    values["buffer_bytes"] = int(values["buffer_bytes"])
    for key, (low, high) in EFFICIENCY_RANGES.items():
        values[key] = float(rng.uniform(low, high))
    choices = _BIT_CHOICES[archetype]
    bits = choices[int(rng.integers(len(choices)))]
    if archetype not in ("fixed-int", "sparse") or 4 not in bits:
        values["int4_speedup"] = 1.0
    if archetype != "sparse":
        values["sparse_efficiency"] = 0.0
    batches = _BATCH_CHOICES[archetype]
    values["batch"] = int(batches[int(rng.integers(len(batches)))])
    return RooflineHardware(name=name or default_name, archetype=archetype, supported_bits=bits,
                            notes=f"sampled {archetype} target", **values)


def with_params(hardware: RooflineHardware, **changes) -> RooflineHardware:
    """A copy of ``hardware`` with some parameters changed (validated again)."""
    return replace(hardware, **changes)

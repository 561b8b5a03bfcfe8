"""The ``Hardware`` interface: what a target costs per layer, and what it can execute.

Every hardware (a roofline archetype, a user's lookup table, this machine's measured CPU)
prices one layer at a time, batch 1, per sample: latency in milliseconds and energy in
millijoules, for the layer's kept input/output channels and its weight/activation
bit-widths. Any bits from 2 to 8 are accepted and priced at ``executed_bits``: the width
the hardware really runs (a 6-bit layer on a 2/4/8-bit machine runs, and costs, 8 bits).

Costs are monotone non-decreasing in kept channels and in bits. The environment's budget
projection relies on it: shrinking any choice never makes a plan dearer, so the most
compressed plan is the cheapest and feasibility is one evaluation (``compressors.budget``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
from typing import Sequence

from metacompress.compressors.cost import REFERENCE_BITS, total_cost
from metacompress.compressors.plan import MAX_BITS, MIN_BITS, Plan
from metacompress.compressors.spec import LayerSpec, ModelSpec
from metacompress.errors import HardwareError

ALL_BITS = tuple(range(MIN_BITS, MAX_BITS + 1))


def round_up_bits(bits: int, supported_bits: Sequence[int], where: str = "this hardware") -> int:
    """The smallest supported width that is at least ``bits``.

    Args:
        bits: requested width, 2-8.
        supported_bits: widths the target executes natively (always holds 8).
        where: the hardware's name, for the error message.

    Raises:
        HardwareError: if ``bits`` is not an integer from 2 to 8.
    """
    if isinstance(bits, bool) or int(bits) != bits or not MIN_BITS <= bits <= MAX_BITS:
        raise HardwareError(f"bit-width {bits!r} asked of {where} is outside {MIN_BITS}-{MAX_BITS}; use an integer from {MIN_BITS} to {MAX_BITS}")
    return min(b for b in supported_bits if b >= bits)


_round_up_cached = lru_cache(maxsize=4096)(round_up_bits)  # pricing calls it per layer; errors are never cached


def check_supported_bits(bits: Sequence[int], where: str) -> tuple[int, ...]:
    """Validate and sort a supported-bits set: a subset of 2..8 that contains 8.

    Raises:
        HardwareError: naming the bad widths and the rule.
    """
    try:
        values = tuple(sorted({int(b) for b in bits}))
    except (TypeError, ValueError) as exc:
        raise HardwareError(f"supported bits of {where} must be integers from 2 to 8, got {bits!r}") from exc
    bad = [b for b in values if b not in ALL_BITS]
    if bad or REFERENCE_BITS not in values:
        raise HardwareError(
            f"supported bits of {where} are {list(values)}; they must be a subset of {list(ALL_BITS)} that contains 8 "
            f"(8-bit is the reference every budget is a fraction of){f'; drop {bad}' if bad else ''}"
        )
    return values


class Hardware(ABC):
    """A target that prices one layer's latency and energy at batch 1.

    Subclasses set ``name``, ``archetype`` and ``supported_bits`` and state their cost law
    in their docstring. Their pricing methods are pure: the same arguments give the same
    float, so callers may cache them.
    """

    name: str
    archetype: str
    supported_bits: tuple[int, ...]

    @property
    def supports_sparsity(self) -> bool:
        """Whether pruning speeds compute beyond its shape reduction (sparse-capable)."""
        return False

    @property
    def has_energy(self) -> bool:
        """Whether ``layer_energy_mj`` can price layers (a lookup table may lack energy)."""
        return True

    def executed_bits(self, bits: int) -> int:
        """The width the hardware really runs for a requested width: rounded up to a supported one.

        Raises:
            HardwareError: if ``bits`` is not an integer from 2 to 8.
        """
        return _round_up_cached(bits, self.supported_bits, self.name)

    @abstractmethod
    def layer_latency_ms(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        """Milliseconds one sample spends in ``layer`` at the kept shape and bits."""

    @abstractmethod
    def layer_energy_mj(self, layer: LayerSpec, kept_in: int, kept_out: int, w_bits: int, a_bits: int) -> float:
        """Millijoules one sample spends in ``layer`` at the kept shape and bits."""

    @abstractmethod
    def describe(self) -> dict:
        """Every parameter of the hardware, JSON-serialisable, for the run record."""

    # whole-model helpers ----------------------------------------------------------------
    def plan_cost(self, spec: ModelSpec, plan: Plan, kind: str = "latency") -> float:
        """Whole-model cost of ``plan`` (latency ms, energy mJ, size bits or BitOps).

        Raises:
            PlanMismatch: if the plan was made for another model.
        """
        plan.check_model(spec)
        return total_cost(spec, kind, plan.kept, plan.w_bits, plan.a_bits, self)

    def __str__(self) -> str:
        bits = "/".join(str(b) for b in self.supported_bits)
        return f"{self.name} ({self.archetype}, bits {bits})"

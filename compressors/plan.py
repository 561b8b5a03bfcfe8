"""A compression plan: per unit, the channels kept and the weight/activation bit-widths.

A plan is bound to the model it was made for by the model's structural fingerprint, so
applying it to another model fails loudly instead of silently pruning the wrong layers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from metacompress.compressors.spec import ModelSpec, UnitSpec
from metacompress.errors import InvalidPlan, PlanMismatch

MIN_BITS = 2
MAX_BITS = 8
FROZEN_BITS = 8
PLAN_FORMAT = 1


def kept_channels_for(unit: UnitSpec, prune_ratio: float) -> int:
    """Channels kept when ``prune_ratio`` of ``unit``'s channels are removed.

    The number removed is rounded to a whole multiple of ``unit.channel_step``.

    Raises:
        InvalidPlan: if the ratio is outside [0, 1) or would remove every channel.
    """
    if not 0.0 <= prune_ratio < 1.0:
        raise InvalidPlan(f"prune ratio {prune_ratio} for unit {unit.name!r} is outside [0, 1); use a fraction of channels to remove, e.g. 0.5")
    if not unit.prunable or unit.frozen:
        if prune_ratio > 0:
            why = unit.reason or "it is frozen"
            raise InvalidPlan(f"unit {unit.name!r} cannot be pruned ({why}); give it prune ratio 0")
        return unit.channels
    removed_steps = round(prune_ratio * unit.channels / unit.channel_step)
    kept = unit.channels - removed_steps * unit.channel_step
    if kept < unit.min_kept:
        largest = 1.0 - unit.min_kept / unit.channels
        raise InvalidPlan(
            f"prune ratio {prune_ratio} would remove every channel of unit {unit.name!r} "
            f"({unit.channels} channels); the largest allowed ratio is {largest:.4g}"
        )
    return kept


def _check_bits(bits: int, what: str, unit: UnitSpec) -> None:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidPlan(f"{what} {bits!r} for unit {unit.name!r} is outside {MIN_BITS}-{MAX_BITS}; choose an integer from {MIN_BITS} to {MAX_BITS}")
    if unit.frozen and bits != FROZEN_BITS:
        raise InvalidPlan(f"unit {unit.name!r} is frozen at {FROZEN_BITS} bits; {what} {bits} is not allowed")


@dataclass(frozen=True)
class LayerDecision:
    """What a plan does to one unit.

    Args:
        unit: the unit's index in the model spec.
        name: the unit's name (for people; the index is what binds).
        prune_ratio: fraction of the unit's channels removed, in [0, 1).
        kept_channels: channels kept, after rounding to the unit's channel step.
        w_bits: weight bit-width, 2-8 (per output channel, symmetric).
        a_bits: bit-width of the unit's layers' input activations, 2-8 (per tensor).
    """

    unit: int
    name: str
    prune_ratio: float
    kept_channels: int
    w_bits: int
    a_bits: int


@dataclass(frozen=True)
class Plan:
    """Per-unit compression decisions for one model (identified by ``fingerprint``)."""

    fingerprint: str
    decisions: tuple[LayerDecision, ...]

    # construction ---------------------------------------------------------------------
    @classmethod
    def from_choices(
        cls,
        spec: ModelSpec,
        prune_ratios: list[float] | tuple[float, ...],
        w_bits: list[int] | tuple[int, ...],
        a_bits: list[int] | tuple[int, ...],
    ) -> "Plan":
        """Build and validate a plan from one prune ratio and two bit-widths per unit.

        Frozen units must be given prune 0 and 8 bits; ``uniform`` does that for you.

        Raises:
            InvalidPlan: on a wrong number of entries, bits outside 2-8, or a prune ratio
                that is negative, >= 1 or would remove every channel.
        """
        n = len(spec.units)
        if not len(prune_ratios) == len(w_bits) == len(a_bits) == n:
            raise InvalidPlan(
                f"a plan for this model needs {n} entries per list; got {len(prune_ratios)} prune ratios, "
                f"{len(w_bits)} weight bits, {len(a_bits)} activation bits"
            )
        decisions = []
        for unit, ratio, wb, ab in zip(spec.units, prune_ratios, w_bits, a_bits):
            wb, ab = _as_int(wb), _as_int(ab)
            _check_bits(wb, "weight bits", unit)
            _check_bits(ab, "activation bits", unit)
            kept = kept_channels_for(unit, float(ratio))
            decisions.append(LayerDecision(unit.index, unit.name, 1.0 - kept / unit.channels, kept, wb, ab))
        return cls(spec.fingerprint, tuple(decisions))

    @classmethod
    def from_kept(cls, spec: ModelSpec, kept: list[int] | tuple[int, ...], w_bits, a_bits) -> "Plan":
        """Build a plan from kept channel counts (must be whole steps) instead of ratios."""
        for unit, k in zip(spec.units, kept):
            if k != unit.channels and (k < unit.min_kept or (unit.channels - k) % unit.channel_step):
                raise InvalidPlan(f"{k} kept channels is not allowed for unit {unit.name!r} ({unit.channels} channels, step {unit.channel_step})")
        ratios = [1.0 - k / u.channels for u, k in zip(spec.units, kept)]
        return cls.from_choices(spec, ratios, w_bits, a_bits)

    @classmethod
    def uniform(cls, spec: ModelSpec, prune: float = 0.0, w_bits: int = 8, a_bits: int = 8) -> "Plan":
        """The same prune ratio and bits everywhere; frozen and unprunable units adapt.

        Frozen units stay at 8 bits and unpruned; unprunable units keep their channels.
        """
        ratios = [prune if (u.prunable and not u.frozen) else 0.0 for u in spec.units]
        wb = [FROZEN_BITS if u.frozen else w_bits for u in spec.units]
        ab = [FROZEN_BITS if u.frozen else a_bits for u in spec.units]
        return cls.from_choices(spec, ratios, wb, ab)

    # views ----------------------------------------------------------------------------
    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(d.kept_channels for d in self.decisions)

    @property
    def w_bits(self) -> tuple[int, ...]:
        return tuple(d.w_bits for d in self.decisions)

    @property
    def a_bits(self) -> tuple[int, ...]:
        return tuple(d.a_bits for d in self.decisions)

    def key(self) -> tuple:
        """Hashable identity of the executed plan (for caching evaluations)."""
        return (self.fingerprint, self.kept, self.w_bits, self.a_bits)

    def check_model(self, spec: ModelSpec) -> None:
        """Raise ``PlanMismatch`` unless this plan was made for ``spec``'s model."""
        if self.fingerprint != spec.fingerprint:
            raise PlanMismatch(
                f"this plan was made for model {self.fingerprint}, not for this model ({spec.fingerprint}); "
                "analyze the model you want to compress and make a plan for it"
            )
        if len(self.decisions) != len(spec.units):
            raise PlanMismatch(f"plan has {len(self.decisions)} decisions but the model has {len(spec.units)} units")

    # serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "fingerprint": self.fingerprint, "decisions": [asdict(d) for d in self.decisions]}

    def to_json(self, path: str | Path | None = None) -> str:
        """The plan as JSON text; also written to ``path`` (atomically) if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from metacompress.compressors.io import write_text_atomic

            write_text_atomic(Path(path), text)
        return text

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        try:
            if data.get("format") != PLAN_FORMAT:
                raise InvalidPlan(f"plan format {data.get('format')!r} is not supported (expected {PLAN_FORMAT})")
            decisions = tuple(LayerDecision(**d) for d in data["decisions"])
            return cls(str(data["fingerprint"]), decisions)
        except (KeyError, TypeError) as exc:
            raise InvalidPlan(f"not a metacompress plan: {exc}; write plans with Plan.to_json") from exc

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Plan":
        """Read a plan from JSON text or from a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPlan(f"plan JSON is corrupt ({exc}); write plans with Plan.to_json") from exc
        return cls.from_dict(data)

    def to_frame(self):
        """One row per unit (pandas DataFrame) with the decision's fields."""
        import pandas as pd

        return pd.DataFrame([asdict(d) for d in self.decisions])


def _as_int(value) -> int:
    """Accept numpy integers and integral floats from agents; reject anything else."""
    if isinstance(value, bool):
        return value  # rejected by _check_bits
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        return value
    return as_int if as_int == value else value

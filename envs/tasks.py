"""Tasks: (model, hardware, budget) triples the agent compresses, and how to resolve them.

A task names its parts rather than holding them, so task lists are small, hashable,
JSON-friendly and can be checked for leakage between splits:

- model: a zoo id (``resnet-w16-d2-mnist``); its dataset comes with it;
- hardware: a preset name (``bismo-edge``), ``sample:<archetype>:<seed>`` for a target
  drawn from an archetype's sampler, or a lookup-table CSV path;
- budget: ``<kind>=<fraction>`` of the unpruned W8A8 cost, e.g. ``latency=0.3``.
"""

from __future__ import annotations

from dataclasses import dataclass

from metacompress.compressors.budget import Budget
from metacompress.compressors.hardware import Hardware, get_hardware, sample_hardware
from metacompress.errors import MetacompressError

SAMPLE_PREFIX = "sample:"


@dataclass(frozen=True)
class Task:
    """One compression task: which model, on which hardware, under which budget."""

    model: str
    hardware: str
    budget: Budget

    @property
    def id(self) -> str:
        return f"{self.model}|{self.hardware}|{self.budget}"

    def to_dict(self) -> dict:
        return {"model": self.model, "hardware": self.hardware, "budget": str(self.budget)}

    @classmethod
    def from_dict(cls, data: dict) -> "Task":
        return cls(data["model"], data["hardware"], Budget.parse(data["budget"]))


def sampled_hardware_name(archetype: str, seed: int) -> str:
    return f"{SAMPLE_PREFIX}{archetype}:{seed}"


def resolve_hardware(name: str | Hardware) -> Hardware:
    """A hardware from a preset name, ``sample:<archetype>:<seed>``, a LUT CSV or an object."""
    if isinstance(name, Hardware):
        return name
    if name.startswith(SAMPLE_PREFIX):
        try:
            archetype, seed = name[len(SAMPLE_PREFIX) :].rsplit(":", 1)
            return sample_hardware(archetype, int(seed))
        except ValueError as exc:
            raise MetacompressError(f"cannot read sampled hardware {name!r}; write sample:<archetype>:<seed>, e.g. sample:bit-serial:3") from exc
    return get_hardware(name)


def hardware_archetype(name: str) -> str:
    """The archetype of a task's hardware (what held-out splits are made of)."""
    return resolve_hardware(name).archetype

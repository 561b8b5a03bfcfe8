"""Errors a user can cause, each naming the problem, the values involved and the fix.

Every error metacompress raises on bad input is a ``MetacompressError`` subclass, so a
caller can catch them all at once while tests match the precise type and message.
"""

from __future__ import annotations


class MetacompressError(Exception):
    """Base class of every error caused by user input or configuration."""


class UnsupportedModel(MetacompressError):
    """The model cannot be analysed: no compressible layer, non-finite weights, bad input."""


class InvalidCalibration(MetacompressError):
    """Calibration data is not a sequence of input batches shaped like the example input."""


class InvalidPlan(MetacompressError):
    """A plan's values are out of range (bits outside 2-8, a prune ratio removing every channel)."""


class PlanMismatch(MetacompressError):
    """A plan was made for a different model than the one it is applied to."""


class InfeasibleBudget(MetacompressError):
    """No allowed plan meets the budget; the message states the minimum achievable cost."""


class HardwareError(MetacompressError):
    """A hardware description or lookup table is invalid or cannot price a layer."""


class CacheCorrupted(MetacompressError):
    """A cached artifact (zoo model, probe table) fails its integrity check."""


class PolicyError(MetacompressError):
    """A saved policy is corrupt, of another version, or made for other spaces."""


class RunExists(MetacompressError):
    """An output directory already exists and ``--overwrite`` was not given."""


class UnknownName(MetacompressError):
    """A name (dataset, model family, zoo model) is not in its registry; the message lists close matches."""


class ZooError(MetacompressError):
    """A zoo model is not cached and building was not allowed, or it missed its accuracy floor."""


class InvalidBudget(MetacompressError):
    """A budget cannot be read or is out of range (unknown kind, fraction outside (0, 1], bad prune limit)."""


class InvalidData(MetacompressError):
    """A data split is empty, has labels outside the model's outputs, or is too small to score plans."""


class EvaluationBudgetError(MetacompressError):
    """A planner was given fewer proxy evaluations than it needs to produce a plan."""


class UnknownMethod(MetacompressError):
    """A planner or benchmark method name is not known; the message lists the known ones."""


class BenchConfigError(MetacompressError):
    """A benchmark configuration is invalid (every problem is listed in one message)."""

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


class UnsupportedLayer(MetacompressError):
    """A layer has no equivalent in the deployment format (e.g. no ONNX operator); the message names it."""


class HardwareError(MetacompressError):
    """A hardware description or lookup table is invalid or cannot price a layer."""


class CacheCorrupted(MetacompressError):
    """A cached artifact (zoo model, probe table) fails its integrity check."""


class PolicyError(MetacompressError):
    """A saved policy is corrupt, of another version, or made for other spaces."""


class RunExists(MetacompressError):
    """An output folder exists and may not be replaced: no ``--overwrite``, or it is not a run of this kind."""


class UnwritableOutput(MetacompressError):
    """An output path cannot be written (its folder is a file, read-only, or not ours); found before any work."""


class CorruptFile(MetacompressError):
    """A saved artifact (model weights, checkpoint, run summary) is truncated, corrupt or unsafe to load."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the message says what was kept and how to continue.

    A ``KeyboardInterrupt``, not a ``MetacompressError``: the CLI exits 130, as shells expect.
    """


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


class UserCodeError(MetacompressError):
    """The user's model file or factory raised; the message names the factory, the line and the exception."""


class InvalidConfig(MetacompressError):
    """A ``--config`` file cannot be read or sets fields the command does not have."""


class BenchConfigError(MetacompressError):
    """A benchmark configuration is invalid (every problem is listed in one message)."""


class InvalidArch(MetacompressError):
    """A generated-architecture spec breaks the grammar or does not fit the input it is built for."""


class ExecutorError(MetacompressError):
    """An executor cannot start (unknown backend, unreachable Ray address) or lost a worker's result."""

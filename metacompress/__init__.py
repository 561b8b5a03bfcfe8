"""metacompress: learned, hardware-aware compression of PyTorch models.

The user API: ``analyze`` a model into compressible units, make or learn a ``Plan``
(prune ratio and weight/activation bits per unit), ``export`` the compressed model.
"""

from metacompress._version import __version__
from metacompress.compressors import (
    ModelSpec,
    Plan,
    analyze,
    export,
    load_compressed,
    save_compressed,
)
from metacompress.errors import (
    InfeasibleBudget,
    InvalidCalibration,
    InvalidPlan,
    MetacompressError,
    PlanMismatch,
    UnsupportedModel,
)

from metacompress import agents  # noqa: F401  (``mc.agents.HawqPlanner()``; importing envs registers the Gymnasium ids)
from metacompress.api import CompressionResult, compress, splits_from_arrays

__all__ = [
    "CompressionResult",
    "compress",
    "splits_from_arrays",
    "InfeasibleBudget",
    "InvalidCalibration",
    "InvalidPlan",
    "MetacompressError",
    "ModelSpec",
    "Plan",
    "PlanMismatch",
    "UnsupportedModel",
    "__version__",
    "analyze",
    "export",
    "export_onnx",
    "load_compressed",
    "save_compressed",
]


def __getattr__(name: str):
    """``metacompress.export_onnx``, imported on first use: onnx takes seconds to import."""
    if name == "export_onnx":
        from metacompress.compressors.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'metacompress' has no attribute {name!r}")

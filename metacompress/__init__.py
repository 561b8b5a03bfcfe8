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
    "load_compressed",
    "save_compressed",
]

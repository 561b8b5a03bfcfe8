"""metacompress: learned, hardware-aware compression of PyTorch models.

The user API: ``analyze`` a model into compressible units, make or learn a ``Plan``
(prune ratio and weight/activation bits per unit), ``export`` the compressed model.
"""

__version__ = "0.1.0"

from metacompress.compressors import (  # noqa: E402  (the version must exist first)
    ModelSpec,
    Plan,
    analyze,
    export,
    load_compressed,
    save_compressed,
)
from metacompress.envs.registration import register_envs  # noqa: E402
from metacompress.errors import (  # noqa: E402
    InfeasibleBudget,
    InvalidCalibration,
    InvalidPlan,
    MetacompressError,
    PlanMismatch,
    UnsupportedModel,
)

from metacompress.api import CompressionResult, compress, splits_from_arrays  # noqa: E402

register_envs()  # gymnasium.make("metacompress/Compress-v0") works after `import metacompress`

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

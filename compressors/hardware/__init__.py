"""Hardware models: what a compression plan costs on a target, and how the agent sees the target.

- ``Hardware``: the interface (per-layer latency ms and energy mJ, supported bits).
- ``RooflineHardware``: a parametric roofline family with five archetypes and samplers.
- ``PRESETS`` / ``get_hardware``: named targets calibrated to public figures.
- ``LookupTableHardware``: a user's measured per-layer costs (CSV).
- ``measure_cpu``: this machine's CPU, measured into a lookup table.
- ``hardware_embedding``: the HELP-style fixed-length description the agent observes.
"""

from metacompress.compressors.hardware.base import Hardware, round_up_bits
from metacompress.compressors.hardware.calibration import CalibrationFigure, calibration_figures
from metacompress.compressors.hardware.embedding import (
    EMBEDDING_DIM,
    PROBE_LAYERS,
    embedding_feature_names,
    hardware_embedding,
)
from metacompress.compressors.hardware.lookup import LookupTableHardware, export_lut, write_lut_csv
from metacompress.compressors.hardware.measure import (
    default_model_spec,
    measure_cpu,
    measure_layers,
    measured_rank_correlation,
)
from metacompress.compressors.hardware.presets import PRESETS, get_hardware
from metacompress.compressors.hardware.roofline import ARCHETYPE_LAWS, ARCHETYPES, RooflineHardware, sample_hardware

__all__ = [
    "ARCHETYPES",
    "ARCHETYPE_LAWS",
    "EMBEDDING_DIM",
    "PRESETS",
    "PROBE_LAYERS",
    "CalibrationFigure",
    "Hardware",
    "LookupTableHardware",
    "RooflineHardware",
    "calibration_figures",
    "default_model_spec",
    "embedding_feature_names",
    "export_lut",
    "get_hardware",
    "hardware_embedding",
    "measure_cpu",
    "measure_layers",
    "measured_rank_correlation",
    "round_up_bits",
    "sample_hardware",
    "write_lut_csv",
]

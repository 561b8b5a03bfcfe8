"""Named hardware presets resembling real targets, and ``get_hardware`` to resolve a name.

Each preset's ``notes`` give the public figures its parameters come from; ``metacompress
hardware calibrate`` recomputes every calibration figure. Peak rates are *effective*
batch-1 rates (what a layer reaches), not datasheet peaks, where the two differ a lot.
Energy numbers scale Horowitz (ISSCC 2014, 45 nm): 8-bit multiply 0.2 pJ + add 0.03 pJ
per MAC, DRAM 640 pJ per 32-bit access (160 pJ/byte).

The default split holds out the brick-fused archetype (``bitfusion-asic``) for testing.
"""

from __future__ import annotations

from pathlib import Path

from metacompress.compressors.hardware.base import Hardware
from metacompress.compressors.hardware.roofline import RooflineHardware
from metacompress.errors import HardwareError

KB = 1024
MB = 1024 * 1024

_PRESET_LIST = [
    RooflineHardware(
        name="bismo-edge", archetype="bit-serial", peak_macs_per_s=5.0e10, dram_gb_per_s=4.2, buffer_bytes=256 * KB,
        supported_bits=(2, 3, 4, 5, 6, 7, 8), overhead_us=5.0, e_mac_pj=0.6, e_dram_pj_per_byte=160.0,
        depthwise_efficiency=0.25, linear_efficiency=0.5,
        notes="HAQ (CVPR 2019) Table 1 edge target: BISMO on a Xilinx Zynq-7020 (PYNQ-Z1). BISMO (FPL 2018) "
              "reaches 6.5 binary TOPS there, i.e. ~5e10 W8A8 MAC/s; DDR3 HP ports ~4.2 GB/s. Calibrated to the "
              "HAQ MobileNetV2 table: per-layer W8A8/W4A4 latency 2.0-3.98x, median 3.5x.",
    ),
    RooflineHardware(
        name="bismo-cloud", archetype="bit-serial", peak_macs_per_s=4.0e11, dram_gb_per_s=64.0, buffer_bytes=8 * MB,
        supported_bits=(2, 3, 4, 5, 6, 7, 8), overhead_us=16.0, e_mac_pj=0.6, e_dram_pj_per_byte=160.0,
        depthwise_efficiency=0.2, linear_efficiency=0.5, batch=16,
        notes="HAQ (CVPR 2019) Table 1 cloud target: BISMO on a Xilinx VU9P, ~8x the edge array, batch 16 as in "
              "HAQ's cloud setting; four DDR4 channels (~64 GB/s usable), large BRAM/URAM buffer. Same bit-serial "
              "law as bismo-edge.",
    ),
    RooflineHardware(
        name="bitfusion-asic", archetype="brick-fused", peak_macs_per_s=2.56e11, dram_gb_per_s=4.0, buffer_bytes=112 * KB,
        supported_bits=(2, 4, 8), overhead_us=2.0, e_mac_pj=0.25, e_dram_pj_per_byte=160.0,
        depthwise_efficiency=0.25, linear_efficiency=0.5,
        notes="BitFusion (Sharma et al., ISCA 2018): 512 fusion units of 16 2-bit BitBricks at 500 MHz, i.e. "
              "2.56e11 W8A8 MAC/s, 112 KB on-chip buffer. Calibrated to APQ's BitFusion LUT (631 shapes, batch 1): "
              "W8A8/W4A4 latency median 2.08x (1.01-3.98), W6A6 = W8A8, W8A4 ~1.4x, W4A8 ~1.6x.",
    ),
    RooflineHardware(
        name="t4-int4", archetype="fixed-int", peak_macs_per_s=5.0e12, dram_gb_per_s=320.0, buffer_bytes=4 * MB,
        supported_bits=(4, 8), overhead_us=1.0, e_mac_pj=0.5, e_dram_pj_per_byte=60.0,
        depthwise_efficiency=0.15, linear_efficiency=0.3, int4_speedup=1.75,
        notes="NVIDIA T4 with TVM int8/int4 kernels as in HAWQ-V3 (ICML 2021): INT8/INT4 per-layer latency "
              "1.32-2.03x, median 1.67x on ResNet-18 (1.61x on ResNet-50): below the ideal 2x. 320 GB/s GDDR6, "
              "4 MB L2; effective int8 rate ~8% of the 130 TOPS datasheet peak at batch 1 (ResNet-18 W8A8 ~0.39 ms).",
    ),
    RooflineHardware(
        name="cortex-a76-int8", archetype="fixed-int", peak_macs_per_s=3.0e10, dram_gb_per_s=10.0, buffer_bytes=2 * MB,
        supported_bits=(8,), overhead_us=15.0, e_mac_pj=2.0, e_dram_pj_per_byte=100.0,
        depthwise_efficiency=0.25, linear_efficiency=0.5,
        notes="One Cortex-A76 core (Pixel 4 / Snapdragon 855 class; nn-Meter's CPU) at 2.4 GHz with int8 SDOT: "
              "~77 GMAC/s peak, ~30 GMAC/s reached by TFLite kernels; LPDDR4X ~10 GB/s per core; 512 KB L2 + "
              "2 MB L3. int8 only: lower bits cost what 8 bits do.",
    ),
    RooflineHardware(
        name="raspi4-a72", archetype="fixed-int", peak_macs_per_s=8.0e9, dram_gb_per_s=4.0, buffer_bytes=1 * MB,
        supported_bits=(8,), overhead_us=30.0, e_mac_pj=4.0, e_dram_pj_per_byte=120.0,
        depthwise_efficiency=0.3, linear_efficiency=0.5,
        notes="Raspberry Pi 4 (Cortex-A72 at 1.5 GHz, no SDOT; one of HELP's test devices): ~8 GMAC/s int8 "
              "per core with NEON, LPDDR4 ~4 GB/s per core, 1 MB shared L2.",
    ),
    RooflineHardware(
        name="m7-mcu", archetype="mcu", peak_macs_per_s=4.8e8, dram_gb_per_s=0.1, buffer_bytes=512 * KB,
        supported_bits=(2, 4, 8), overhead_us=20.0, e_mac_pj=50.0, e_dram_pj_per_byte=30.0,
        depthwise_efficiency=0.6, linear_efficiency=1.0,
        notes="STM32H7-like Cortex-M7 at 480 MHz (CMSIS-NN int8, ~1 MAC/cycle): weights streamed from "
              "external QSPI flash at ~0.1 GB/s, 512 KB SRAM for activations. Sub-byte weights are packed (2/4/8), so "
              "memory-bound layers (pointwise, linear) speed up about linearly with bits; compute does not.",
    ),
    RooflineHardware(
        name="eyeriss-like", archetype="fixed-int", peak_macs_per_s=3.4e10, dram_gb_per_s=2.0, buffer_bytes=108 * KB,
        supported_bits=(8,), overhead_us=20.0, e_mac_pj=0.5, e_dram_pj_per_byte=160.0,
        depthwise_efficiency=0.08, linear_efficiency=0.2,
        notes="Eyeriss (Chen et al., ISSCC 2016 / JSSC 2017): 168 PEs at 200 MHz (3.4e10 MAC/s), 108 KB global "
              "buffer, narrow DRAM link; row-stationary maps depthwise and FC layers poorly. HELP (NeurIPS 2021) "
              "finds FLOPs rank latency poorly on such ASICs (FLOPs Spearman 0.787 averaged over devices).",
    ),
    RooflineHardware(
        name="ampere-sparse", archetype="sparse", peak_macs_per_s=3.0e13, dram_gb_per_s=1555.0, buffer_bytes=32 * MB,
        supported_bits=(4, 8), overhead_us=4.0, e_mac_pj=0.3, e_dram_pj_per_byte=40.0,
        depthwise_efficiency=0.15, linear_efficiency=0.3, int4_speedup=1.6, sparse_efficiency=0.5,
        notes="A100-like (Ampere) with 2:4 sparse tensor cores: 2x math at 50% fine-grained sparsity; our "
              "structured pruning gets eta=0.5 of it (see the sparse law). int4 path 1.6x like T4 (HAWQ-V3), "
              "1555 GB/s HBM2, 40 MB L2 (32 MB usable), ~10% of the 312 TMAC/s int8 peak at batch 1.",
    ),
    RooflineHardware(
        name="bitfusion-edge", archetype="brick-fused", peak_macs_per_s=3.2e10, dram_gb_per_s=3.2, buffer_bytes=64 * KB,
        supported_bits=(2, 4, 8), overhead_us=5.0, e_mac_pj=0.25, e_dram_pj_per_byte=160.0,
        depthwise_efficiency=0.25, linear_efficiency=0.5,
        notes="A 64-fusion-unit BitFusion (ISCA 2018 reports scaled configurations) for edge power budgets: "
              "3.2e10 W8A8 MAC/s, 64 KB buffer, LPDDR ~3.2 GB/s. Same brick law: W6A6 costs W8A8.",
    ),
]

PRESETS: dict[str, RooflineHardware] = {hw.name: hw for hw in _PRESET_LIST}
MEASURED_PREFIX = "measured:"


def get_hardware(name_or_path: str | Hardware) -> Hardware:
    """Resolve a preset name, a lookup-table CSV path, or ``measured:<csv>``.

    Args:
        name_or_path: ``"t4-int4"``; ``"my_board.csv"`` (a user's measured table, see
            ``metacompress.compressors.hardware.lookup``); ``"measured:cpu.csv"`` (a table
            written by ``metacompress hardware measure``). A ``Hardware`` is returned as is.

    Raises:
        HardwareError: for an unknown name (listing the valid ones) or an unreadable table.
    """
    if isinstance(name_or_path, Hardware):
        return name_or_path
    text = str(name_or_path)
    if text in PRESETS:
        return PRESETS[text]
    from metacompress.compressors.hardware.lookup import LookupTableHardware

    if text.startswith(MEASURED_PREFIX):
        return LookupTableHardware.from_csv(text[len(MEASURED_PREFIX):], archetype="measured")
    if text.endswith(".csv") or Path(text).is_file():
        return LookupTableHardware.from_csv(text)
    raise HardwareError(
        f"hardware {text!r} is unknown; use a preset ({', '.join(PRESETS)}), a lookup-table CSV path, "
        "or measured:<csv> from `metacompress hardware measure`"
    )

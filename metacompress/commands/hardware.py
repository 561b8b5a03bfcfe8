"""``metacompress hardware``: list, show, measure and calibrate hardware targets."""

from __future__ import annotations

import argparse
import json
import math

from metacompress.compressors.hardware import (
    PRESETS,
    PROBE_LAYERS,
    calibration_figures,
    default_model_spec,
    get_hardware,
    measure_cpu,
    measured_rank_correlation,
)
from metacompress.compressors.budget import DEFAULT_MAX_PRUNE
from metacompress.compressors.hardware.measure import KEPT_FRACTIONS, budget_floors, measured_cpu_figure

SHOW_LAYERS = ("probe1.conv3x3.mid", "probe4.pointwise", "probe6.depthwise.bigmap", "probe8.linear")
SHOW_BITS = ((6, 6), (4, 4), (2, 2), (8, 4), (4, 8))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hardware list|show|measure|calibrate`` to the CLI."""
    parser = subparsers.add_parser("hardware", help="list, show, measure and calibrate hardware targets",
                                   description="Hardware targets: presets, lookup tables and this machine's measured CPU.")
    commands = parser.add_subparsers(dest="hardware_command", required=True, metavar="ACTION")

    listing = commands.add_parser("list", help="table of the presets", epilog="example: metacompress hardware list")
    listing.set_defaults(handler=run_list)

    show = commands.add_parser("show", help="parameters and per-bit speedups of one target",
                               epilog="example: metacompress hardware show bitfusion-asic")
    show.add_argument("name", help="a preset name, a lookup-table CSV path, or measured:<csv>")
    show.set_defaults(handler=run_show)

    measure = _with_measure_flags(commands.add_parser(
        "measure", help="time this CPU (torch fp32, or onnxruntime int8 vs fp32) on the layers of the model you will compress",
        epilog="example: metacompress hardware measure --model mobilenetv2-w8-d1-digits --out cpu.csv --seed 0, "
               "then: metacompress apply --model mobilenetv2-w8-d1-digits --hardware cpu.csv --budget latency=0.5"))
    measure.add_argument("--out", required=True, help="CSV file to write (the format of hardware.lookup)")
    measure.add_argument("--model", default=None,
                         help="zoo id or path/to/file.py:factory whose layers to time: the model you will `apply` with "
                              "--hardware OUT (default: a built-in TinyResNet, which prices only itself)")
    measure.add_argument("--max-prune", type=float, default=DEFAULT_MAX_PRUNE,
                         help=f"the --max-prune you will apply with, for the budget floors printed (default {DEFAULT_MAX_PRUNE})")
    measure.add_argument("--fractions", type=float, nargs="+", default=list(KEPT_FRACTIONS),
                         help="kept fractions of each layer's input and output channels to time (default: %(default)s)")
    measure.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads while timing (default: %(default)s)")
    measure.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                         help="torch: fp32 kernels, one W8A8 row per shape; onnxruntime: int8 QDQ and fp32 timed, the "
                              "W8A8 rows are int8 (default: %(default)s)")
    measure.set_defaults(handler=run_measure)

    calibrate = _with_measure_flags(commands.add_parser(
        "calibrate", help="print every calibration figure against its public source",
        epilog="example: metacompress hardware calibrate --seed 0   (or --lut cpu.csv to reuse a measurement)"))
    calibrate.add_argument("--lut", help="reuse a table from `hardware measure` instead of measuring this CPU now")
    calibrate.set_defaults(handler=run_calibrate)


def _with_measure_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--seed", type=int, default=0, help="seeds the random plans and the timed layers' weights (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per layer shape; the median is kept (default: %(default)s)")
    parser.add_argument("--plans", type=int, default=200, help="random plans for the rank correlation (default: %(default)s)")
    return parser


def run_list(args: argparse.Namespace) -> int:
    print(f"{'name':<16} {'archetype':<12} {'bits':<14} calibrated to")
    for name, hw in PRESETS.items():
        bits = "/".join(str(b) for b in hw.supported_bits)
        print(f"{name:<16} {hw.archetype:<12} {bits:<14} {hw.notes.split(': ')[0][:90]}")
    print("\nalso: a lookup-table CSV path, or measured:<csv> from `metacompress hardware measure`")
    return 0


def run_show(args: argparse.Namespace) -> int:
    hw = get_hardware(args.name)
    print(json.dumps(hw.describe(), indent=2))
    print("\nlatency speedup W8A8 / WxAx (batch 1, full layer):")
    header = "".join(f"{f'W{w}A{a}':>9}" for w, a in SHOW_BITS)
    print(f"{'layer':<26}{'W8A8 ms':>11}{header}")
    for layer in (p for p in PROBE_LAYERS if p.name in SHOW_LAYERS):
        full = (layer.in_channels, layer.out_channels)
        base = hw.layer_latency_ms(layer, *full, 8, 8)
        cells = "".join(f"{base / hw.layer_latency_ms(layer, *full, w, a):>9.2f}" for w, a in SHOW_BITS)
        print(f"{layer.name:<26}{base:>11.4g}{cells}")
    rounded = [f"{b}->{hw.executed_bits(b)}" for b in range(2, 9) if hw.executed_bits(b) != b]
    if rounded:
        print("bits rounded up: " + ", ".join(rounded))
    return 0


def _measured_spec(model_source: str | None):
    if model_source is None:
        return default_model_spec()
    from metacompress.compressors.graph import analyze
    from metacompress.sources import load_model_source

    model, data, _ = load_model_source(model_source)
    return analyze(model, data.train.x[:8])


def run_measure(args: argparse.Namespace) -> int:
    from metacompress.compressors.runs import check_writable

    check_writable(args.out, "--out")  # before minutes of timing
    spec = _measured_spec(args.model)
    if args.runtime == "onnxruntime":
        measured = _measure_onnxruntime(spec, args)
    else:
        measured = measure_cpu(spec, args.out, fractions=tuple(args.fractions), repeats=args.repeats,
                               threads=args.threads, seed=args.seed)
    info = measured.describe()
    print(f"wrote {args.out}: {info['rows']} rows, {info['signatures']} layer shapes "
          f"({args.model or 'built-in TinyResNet'} layers and embedding probes)")
    rho, _, _ = measured_rank_correlation(spec, measured, PRESETS["cortex-a76-int8"], args.plans, args.seed)
    ranking = "undefined (every plan timed or priced the same)" if math.isnan(rho) else f"{rho:.3f}"
    print(f"Spearman(cortex-a76-int8 prediction, measured) over {args.plans} random plans: {ranking}")
    floors = budget_floors(spec, measured, args.max_prune)
    served = ", ".join(f"{kind} >= {floor:.3f}" for kind, floor in floors.items() if floor is not None)
    print(f"budgets it serves for this model (the most compressed plan at --max-prune {args.max_prune:g}; fp32 kernels "
          f"run every width at 8-bit cost, so size and bitops fall by pruning alone): {served}; energy: not measured")
    model = f"--model {args.model} " if args.model else ""
    print(f"use it as: metacompress apply {model}--hardware {args.out} --budget latency={min(1.0, max(0.5, floors['latency'] * 1.2)):.2f}")
    return 0


def _measure_onnxruntime(spec, args: argparse.Namespace):
    from metacompress.compressors.hardware.measure_onnx import cpu_flags, cpu_name, measure_onnxruntime

    flags = cpu_flags()
    print(f"CPU: {cpu_name()}; int8 flags: " + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()))
    result = measure_onnxruntime(spec, args.out, fractions=tuple(args.fractions), repeats=args.repeats,
                                 threads=args.threads, seed=args.seed)
    print(f"onnxruntime, {args.threads} thread(s), batch 1: the model's {len(spec.layers)} layers at full width take "
          f"{result.model_int8_ms:.4f} ms int8 vs {result.model_fp32_ms:.4f} ms fp32 ({result.int8_speedup:.2f}x); "
          f"int8 is faster for {result.layers_faster_int8} of {result.layers} layer shapes")
    if result.int8_speedup <= 1.0:
        print("int8 is NOT faster than fp32 on this CPU for this model: a latency budget gains nothing from 8-bit here")
    print("the W8A8 rows hold int8 latency; fp32 latency is in the column fp32_latency_ms; widths below 8 are priced as 8")
    return result.hardware


def run_calibrate(args: argparse.Namespace) -> int:
    figures = calibration_figures()
    figures.append(measured_cpu_figure(lut_path=args.lut, n_plans=args.plans, seed=args.seed, repeats=args.repeats))
    for figure in figures:
        status = "ok" if figure.ok else "OUT OF RANGE"
        print(f"[{status}] {figure.hardware}: {figure.name} = {figure.value:.3f}  (expected {figure.low:g}-{figure.high:g})")
        print(f"      {figure.detail}")
        print(f"      public figure: {figure.source}")
    return 0 if all(f.ok for f in figures) else 1

"""``metacompress hardware``: list, show, measure and calibrate hardware targets."""

from __future__ import annotations

import argparse
import json

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
        "measure", help="time this CPU on the layers of the model you will compress and write a lookup table",
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
    measure.add_argument("--threads", type=int, default=1, help="torch threads while timing (default: %(default)s)")
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


def run_measure(args: argparse.Namespace) -> int:
    from metacompress.runs import check_writable

    check_writable(args.out, "--out")  # before minutes of timing
    spec = _model_spec(args.model) if args.model else default_model_spec()
    measured = measure_cpu(spec, args.out, fractions=tuple(args.fractions), repeats=args.repeats,
                           threads=args.threads, seed=args.seed)
    info = measured.describe()
    print(f"wrote {args.out}: {info['rows']} rows, {info['signatures']} layer shapes "
          f"({args.model or 'built-in TinyResNet'} layers and embedding probes)")
    rho, _, _ = measured_rank_correlation(spec, measured, PRESETS["cortex-a76-int8"], args.plans, args.seed)
    print(f"Spearman(cortex-a76-int8 prediction, measured) over {args.plans} random plans: {rho:.3f}")
    floors = budget_floors(spec, measured, args.max_prune)
    served = ", ".join(f"{kind} >= {floor:.3f}" for kind, floor in floors.items() if floor is not None)
    print(f"budgets it serves for this model (the most compressed plan at --max-prune {args.max_prune:g}; fp32 kernels "
          f"run every width at 8-bit cost, so size and bitops fall by pruning alone): {served}; energy: not measured")
    model = f"--model {args.model} " if args.model else ""
    print(f"use it as: metacompress apply {model}--hardware {args.out} --budget latency={min(1.0, max(0.5, floors['latency'] * 1.2)):.2f}")
    return 0


def _model_spec(source: str):
    """The spec of ``--model`` (a zoo id or file.py:factory), as ``apply`` will analyse it."""
    from metacompress.compressors.graph import analyze
    from metacompress.sources import load_model_source

    model, data, _ = load_model_source(source)
    return analyze(model, data.train.x[:8])


def run_calibrate(args: argparse.Namespace) -> int:
    figures = calibration_figures()
    figures.append(measured_cpu_figure(lut_path=args.lut, n_plans=args.plans, seed=args.seed, repeats=args.repeats))
    for figure in figures:
        status = "ok" if figure.ok else "OUT OF RANGE"
        print(f"[{status}] {figure.hardware}: {figure.name} = {figure.value:.3f}  (expected {figure.low:g}-{figure.high:g})")
        print(f"      {figure.detail}")
        print(f"      public figure: {figure.source}")
    return 0 if all(f.ok for f in figures) else 1

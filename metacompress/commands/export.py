"""``metacompress export``: a run's compressed model as a deployable file (ONNX QDQ)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export RUN --format onnx --out FILE`` to the CLI."""
    parser = subparsers.add_parser(
        "export",
        help="write a run's compressed model as ONNX (QDQ, per-layer bits) and check it in onnxruntime",
        epilog="example: metacompress export runs/apply-mobilenetv2-w8-d1-digits-s0 --format onnx --out model.onnx",
    )
    parser.add_argument("run", help="run folder written by `metacompress apply` (holds model/)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="output format (default onnx)")
    parser.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13 or newer (default 17)")
    parser.add_argument("--dynamic-dims", type=int, nargs="+", default=[], metavar="DIM",
                        help="input dimensions besides the batch left free in the graph, e.g. 1 for a sequence's length "
                             "(N, T) or 2 3 for an image's height and width; checked at twice the traced size (default: none)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the accuracy check (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from metacompress.compressors.onnx_export import export_onnx, layer_bits, onnx_agreement
    from metacompress.errors import MetacompressError, RunExists
    from metacompress.sources import load_run

    out = Path(args.out)
    if any(d < 1 for d in args.dynamic_dims):  # the input's rank is known only after loading; this much is not
        raise MetacompressError(f"--dynamic-dims {args.dynamic_dims}: dimension 0, the batch, is always dynamic; "
                                "name dimensions from 1, e.g. --dynamic-dims 1 for a sequence's length")
    if out.exists() and not args.overwrite:  # before the minutes of loading
        raise RunExists(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    compressed, data = load_run(args.run)
    export_onnx(compressed, out, data.test.x[:1], opset=args.opset, overwrite=args.overwrite, dynamic_dims=args.dynamic_dims)
    w_bits, a_bits = layer_bits(out)
    low = sorted(name for name in w_bits if w_bits[name] < 8 or a_bits[name] < 8)
    check = onnx_agreement(compressed, out, data.test.x, data.test.y, threads=args.threads)
    free = "".join(f", input dim {d} free" for d in sorted(set(args.dynamic_dims)))
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB, opset {args.opset}{free}): {len(w_bits)} quantized layers, "
          f"{len(w_bits) - len(low)} at W8A8 (int8 QDQ), {len(low)} below 8 bits on their lattice in int8/uint8 containers")
    if low:
        print("  below 8 bits: " + ", ".join(f"{n} W{w_bits[n]}A{a_bits[n]}" for n in low))
    print(f"  test accuracy: PyTorch (fake-quant) {check['torch_accuracy']:.4f}, onnxruntime {check['onnx_accuracy']:.4f} "
          f"({check['difference_points']:+.2f} points, {len(data.test.x)} samples)")
    return 0

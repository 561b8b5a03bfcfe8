"""``metacompress export``: a run folder's model as ONNX, checked in onnxruntime, never overwritten silently."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import onnx

from metacompress import Plan, analyze, export, save_compressed
from metacompress.cli import main


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as `apply` writes it, for a user-file model (a tiny MLP at W4A6, half its channels)."""
    factory = tmp_path / "tiny.py"
    factory.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from tiny_models import TinyMLP, trained_like
        from tiny_world import tiny_data

        def build():
            model = trained_like(TinyMLP())
            return model, tiny_data(model)
    """))
    from metacompress.sources import load_model_source

    model, data, builder = load_model_source(f"{factory}:build")
    spec = analyze(model, data.train.x[:8])
    compressed = export(model, Plan.uniform(spec, prune=0.5, w_bits=4, a_bits=6), data.train.x[:8], [data.train.x])
    save_compressed(compressed, tmp_path / "run" / "model", builder=builder)
    return tmp_path / "run"


def test_export_writes_onnx_with_per_layer_bits_and_matching_accuracy(tmp_path, capsys):
    run = _run_folder(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 quantized layers, 1 at W8A8 (int8 QDQ), 2 below 8 bits" in text
    assert "fc1 W4A6, fc2 W4A6" in text
    torch_acc, onnx_acc = map(float, re.search(r"fake-quant\) ([\d.]+), onnxruntime ([\d.]+)", text).groups())
    assert abs(torch_acc - onnx_acc) <= 0.005
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["metacompress.weight_bits"] == '{"fc1": 4, "fc2": 4, "head": 8}'

    before = out.read_bytes()
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "already exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 0


def test_export_of_a_folder_without_a_model_names_the_fix(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "has no model/ folder; pass a run folder written by `metacompress apply`" in capsys.readouterr().err


def test_export_refuses_the_batch_as_a_dynamic_dimension_before_loading(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "m.onnx"), "--dynamic-dims", "0"]) == 2
    assert "dimension 0, the batch, is always dynamic; name dimensions from 1" in capsys.readouterr().err

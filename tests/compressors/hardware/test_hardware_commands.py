"""``metacompress hardware list|show|measure|calibrate`` (registered on a parser of their own)."""

from __future__ import annotations

import argparse
import re

import pytest

from metacompress.commands import hardware as command
from metacompress.compressors.hardware import PRESETS
from metacompress.errors import HardwareError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="metacompress")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["hardware", *argv])
    return args.handler(args)


def test_list_shows_every_preset(capsys):
    assert run("list") == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split() and line.split()[0] in PRESETS]
    assert len(rows) == len(PRESETS) == 10
    assert any(line.startswith("bitfusion-asic   brick-fused  2/4/8") for line in rows)


def test_show_prints_parameters_and_speedups(capsys):
    assert run("show", "bitfusion-asic") == 0
    out = capsys.readouterr().out
    assert '"peak_macs_per_s": 256000000000.0' in out
    conv_row = next(line for line in out.splitlines() if line.startswith("probe1.conv3x3.mid"))
    assert conv_row.split()[2:4] == ["1.00", "3.47"]  # W6A6 runs as W8A8; W4A4 3.47x faster
    assert "bits rounded up: 3->4, 5->8, 6->8, 7->8" in out


def test_show_refuses_an_unknown_name():
    with pytest.raises(HardwareError, match="hardware 'nope' is unknown"):
        run("show", "nope")


def test_measure_then_calibrate_from_the_table(tmp_path, capsys):
    out_csv = tmp_path / "cpu.csv"
    assert run("measure", "--out", str(out_csv), "--repeats", "2", "--plans", "30", "--fractions", "0.5", "1.0") == 0
    out = capsys.readouterr().out
    assert out_csv.is_file() and "Spearman(cortex-a76-int8 prediction, measured) over 30 random plans" in out
    status = run("calibrate", "--lut", str(out_csv), "--plans", "30")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 10
    assert all(line.startswith("[ok]") for line in lines[:9])  # the preset figures are deterministic
    assert status == (0 if lines[9].startswith("[ok]") else 1)


def test_measure_the_users_model_then_apply_with_the_table(tmp_path, monkeypatch, capsys):
    """Issue 13 item 6: `measure` timed a built-in CNN, so `apply --hardware cpu.csv` could price no zoo or user model."""
    from metacompress.benchmarks.reliability import USER_MODEL
    from metacompress.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel.py").write_text(USER_MODEL)
    assert run("measure", "--model", "mymodel.py:factory", "--out", "cpu.csv", "--repeats", "1", "--plans", "10",
               "--fractions", "0.25", "0.5", "1.0") == 0
    out = capsys.readouterr().out
    floors = next(line for line in out.splitlines() if line.startswith("budgets it serves"))
    # size and bitops floors are priced (pruning lowers them); the latency floor is a timing with --repeats 1, and on a
    # busy machine the most compressed plan can time no faster than W8A8 (floor 1.000), so only its presence is checked
    assert re.search(r"latency >= [01]\.\d{3}", floors), floors
    assert "size >= 0." in floors and "bitops >= 0." in floors and "energy: not measured" in floors
    suggested = out.split("use it as: metacompress ")[1].split()
    assert suggested[:6] == ["apply", "--model", "mymodel.py:factory", "--hardware", "cpu.csv", "--budget"]
    assert main(suggested + ["--finetune-steps", "1", "--out", "run"]) == 0
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"hardware": "cpu"' in summary and '"within_budget": true' in summary

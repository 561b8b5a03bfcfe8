"""RunFolder (issue 13 items 1, 2, 8, 9): what --overwrite may replace, atomic swaps, refusals before work, permissions."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

import pytest

from metacompress._version import __version__
from metacompress.errors import InvalidConfig, RunExists, UnwritableOutput
from metacompress.compressors.runs import MANIFEST, RunFolder, check_writable, config_from_file, read_manifest


def thesis(tmp_path):
    """A folder of the user's that is not a metacompress run."""
    folder = tmp_path / "my-thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("years of work")
    return folder


def leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path):
    folder = thesis(tmp_path)
    with pytest.raises(RunExists, match=f"my-thesis is not a metacompress run \\(it has no {MANIFEST}\\).*remove .* yourself"):
        with RunFolder(folder, "apply", overwrite=True).write({}) as tmp:
            (tmp / "summary.json").write_text("{}")
    assert (folder / "chapter1.tex").read_text() == "years of work" and leftovers(tmp_path) == []


def test_overwrite_replaces_only_a_run_of_the_same_kind(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out, "train").write({"timesteps": 1}) as tmp:
        (tmp / "a.txt").write_text("old")
    assert read_manifest(out) == {"format": 1, "kind": "train", "metacompress_version": __version__}
    with pytest.raises(RunExists, match="is a metacompress train run, so --overwrite will not replace it with a new apply run"):
        RunFolder(out, "apply", overwrite=True).check()
    with RunFolder(out, "train", overwrite=True).write({"timesteps": 2}) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "config.json", MANIFEST]
    record = json.loads((out / "config.json").read_text())
    assert record["config"] == {"timesteps": 2} and record["versions"]["metacompress"] == __version__
    assert set(record["versions"]) == {"metacompress", "torch", "stable_baselines3", "gymnasium", "numpy", "python"}
    assert leftovers(tmp_path) == []


def test_a_failed_or_interrupted_write_keeps_the_old_run(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out, "apply").write() as tmp:
        (tmp / "plan.json").write_text("old")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with RunFolder(out, "apply", overwrite=True).write() as tmp:
                (tmp / "plan.json").write_text("new")
                raise error
        assert (out / "plan.json").read_text() == "old" and leftovers(tmp_path) == []


def test_keep_partial_swaps_a_resumable_run_in_on_interrupt(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunFolder(out, "train").write({}, keep_partial=lambda tmp: (tmp / "ckpt").exists()) as tmp:
            (tmp / "ckpt").write_text("step 32")
            raise KeyboardInterrupt
    assert (out / "ckpt").read_text() == "step 32" and leftovers(tmp_path) == []


def test_a_regular_file_is_refused_even_with_overwrite(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(RunExists, match="results.txt exists and is not a folder"):
        with RunFolder(target, "apply", overwrite=True).write():
            pass
    assert target.read_text() == "keep me" and leftovers(tmp_path) == []


def test_an_unwritable_place_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UnwritableOutput, match="cannot write --out .*file/run: .*file is a file, not a folder"):
        RunFolder(tmp_path / "file" / "run", "apply").check()
    with pytest.raises(UnwritableOutput, match="cannot write --plot /proc/x.png: /proc is not writable"):
        check_writable("/proc/x.png", "--plot")


def test_run_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with RunFolder(tmp_path / "run", "model").write() as tmp:
            fd = os.open(tmp / "weights.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors and mkstemp do
            os.close(fd)
            (tmp / "sub").mkdir(mode=0o700)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "run", *(tmp_path / "run").iterdir()]}
    assert modes == {"run": 0o755, "weights.safetensors": 0o644, "sub": 0o755, MANIFEST: 0o644}


@dataclass(frozen=True)
class _Config:
    steps: int = 1
    models: tuple[str, ...] = ()


def test_config_file_sets_fields_and_names_unknown_ones(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"steps": 5, "models": ["a", "b"]}))
    assert config_from_file(path, _Config()) == _Config(5, ("a", "b"))
    path.write_text(json.dumps({"stpes": 5}))
    with pytest.raises(InvalidConfig, match=r"unknown: \['stpes'\]; known: steps, models"):
        config_from_file(path, _Config())

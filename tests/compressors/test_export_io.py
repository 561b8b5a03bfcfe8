"""Saving and reloading an exported model: no pickled code, same outputs, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from metacompress import MetacompressError, Plan, PlanMismatch, analyze, export, load_compressed, save_compressed
from metacompress.errors import CorruptFile, RunExists
from tiny_models import TINY_MODELS, TinyMLP, example_input, trained_like


def test_save_and_reload_reproduces_outputs(tiny, tmp_path):
    name, model, x = tiny
    spec = analyze(model, x)
    plan = Plan.uniform(spec, prune=0.5, w_bits=3, a_bits=5)
    compressed = export(model, plan, x, [x])
    save_compressed(compressed, tmp_path / "out", builder={"tiny": name})
    tensors = load_file(str(tmp_path / "out" / "weights.safetensors"))
    structure = json.loads((tmp_path / "out" / "model.json").read_text())
    assert structure["builder"] == {"tiny": name}
    for layer, bits in structure["weight_bits"].items():
        codes = tensors[f"{layer}.weight_codes"]
        assert codes.dtype == torch.int8 and codes.abs().max() <= 2 ** (bits - 1) - 1  # 3 bits: -3..3
    assert sorted(set(structure["weight_bits"].values())) == [3, 8]  # the frozen head stays at 8
    reloaded = load_compressed(tmp_path / "out", TINY_MODELS[name]())
    assert torch.equal(reloaded(x), compressed(x))
    assert reloaded.metacompress_plan == plan


class _VersionedMLP(TinyMLP):
    """Refuses a state dict without its version, as torchvision's MNASNet does."""

    _version = 2

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        if local_metadata.get("version") is None:
            raise ValueError("version should be set to 1 or 2 instead of None")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_a_model_that_reads_its_state_dict_version_reloads(tmp_path):
    model = trained_like(_VersionedMLP())
    x = example_input(model)
    compressed = export(model, Plan.uniform(analyze(model, x), prune=0.5, w_bits=4), x, [x])
    save_compressed(compressed, tmp_path / "out")  # safetensors keeps tensors only, no module versions
    assert torch.equal(load_compressed(tmp_path / "out", _VersionedMLP())(x), compressed(x))


def test_existing_output_is_not_overwritten_silently(tmp_path):
    model = trained_like(TinyMLP())
    x = example_input(model)
    compressed = export(model, Plan.uniform(analyze(model, x)), x, [x])
    save_compressed(compressed, tmp_path / "out")
    with pytest.raises(RunExists, match="--overwrite"):
        save_compressed(compressed, tmp_path / "out")
    save_compressed(compressed, tmp_path / "out", overwrite=True)


def test_loading_into_another_architecture_is_refused(tmp_path):
    model = trained_like(TinyMLP())
    x = example_input(model)
    save_compressed(export(model, Plan.uniform(analyze(model, x)), x, [x]), tmp_path / "out")
    with pytest.raises(PlanMismatch, match="base model lacks modules"):
        load_compressed(tmp_path / "out", TINY_MODELS["vgg"]())


def test_saving_a_plain_model_is_refused(tmp_path):
    with pytest.raises(MetacompressError, match="export it first"):
        save_compressed(TinyMLP(), tmp_path / "out")


@pytest.fixture
def saved(tmp_path):
    model = trained_like(TinyMLP())
    x = example_input(model)
    return save_compressed(export(model, Plan.uniform(analyze(model, x)), x, [x]), tmp_path / "out"), x


def test_overwrite_replaces_a_saved_model_but_never_another_folder(saved, tmp_path):
    """Issue 13 item 1: save_compressed(overwrite=True) deleted whatever the folder held."""
    path, x = saved
    compressed = load_compressed(path, TinyMLP())
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(RunExists, match="not a metacompress run"):
        save_compressed(compressed, notes, overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine"
    with pytest.raises(RunExists, match="is a metacompress model run"):
        from metacompress.compressors.runs import RunFolder

        RunFolder(path, "apply", overwrite=True).check()


def test_model_json_may_set_only_shape_attributes(saved):
    """Issue 13 item 9: any attribute in model.json was set on the user's modules (e.g. forward)."""
    path, _ = saved
    structure = json.loads((path / "model.json").read_text())
    first = next(iter(structure["shapes"]))
    for attrs in ({"forward": 3}, {"in_features": "12"}, {"in_features": True}):
        bad = {**structure, "shapes": {**structure["shapes"], first: attrs}}
        (path / "model.json").write_text(json.dumps(bad))
        with pytest.raises(CorruptFile, match=f"model.json sets {first}\\..*only in_channels, .* may be set, to integers"):
            load_compressed(path, TinyMLP())


def test_corrupt_weights_are_a_clear_error(saved):
    """Issue 13 item 9: a truncated weights file escaped as a raw SafetensorError."""
    path, _ = saved
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CorruptFile, match="weights.safetensors is missing or corrupt .*re-save the model"):
        load_compressed(path, TinyMLP())

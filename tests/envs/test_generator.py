"""Generated networks: seeded specs, JSON round trip, every draw analysable, nothing held
out reproduced, no attention, and a build-and-cache round trip through the zoo."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from metacompress.cli import main
from metacompress.compressors.graph import analyze
from metacompress.envs.zoo import generator
from metacompress.envs.zoo.training import model_accuracy, module_macs, module_params
from metacompress.envs.zoo.archspec import BLOCK_KINDS, ArchSpec, BlockSpec, build_arch, layer_signature
from metacompress.envs.zoo.families import Attention, build_model
from metacompress.envs.zoo.generator import (
    GENERATED_FLOORS,
    MAX_MACS,
    MAX_PARAMS,
    build_generated,
    generated_entries,
    generated_entry,
    sample_arch,
)
from metacompress.envs.suite import SuiteConfig
from metacompress.envs.zoo.cache import ZooRecord, build_zoo, load_zoo_model
from metacompress.envs.zoo.catalog import ZOO, ZooEntry, get_entry, reseed
from metacompress.errors import InvalidArch, ZooError

HELD_OUT = [e for e in ZOO if e.family in SuiteConfig().heldout_families]
ANALYSED = generated_entries(32)


@pytest.fixture(scope="module")
def many() -> tuple[ZooEntry, ...]:
    """The first 120 generated entries (30 per dataset): what the grammar tests range over."""
    return generated_entries(120)


def _weights(spec: ArchSpec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_arch(spec, (1, 14, 14), 10).state_dict()


def test_same_seed_same_spec_and_same_initial_weights():
    spec = sample_arch(3, "mnist")
    assert sample_arch(3, "mnist") == spec != sample_arch(4, "mnist")
    assert sample_arch(3, "mnist") != sample_arch(3, "shapes")
    first, again, other = _weights(spec, 0), _weights(spec, 0), _weights(spec, 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    sample_arch(11, "digits")  # the draw's checks build models: the caller's RNG stays put
    assert torch.equal(torch.rand(3), expected)


def test_specs_and_entries_round_trip_json(many):
    for entry in many[:40]:
        assert ArchSpec.from_json(entry.arch.to_json()) == entry.arch
        assert ZooEntry.from_dict(json.loads(json.dumps(asdict(entry)))) == entry
    assert hash(many[0].arch) == hash(ArchSpec.from_json(many[0].arch.to_json()))


@pytest.mark.parametrize("entry", ANALYSED, ids=[e.id for e in ANALYSED])
def test_every_draw_builds_within_budget_and_analyses_with_a_prunable_unit(entry):
    model = build_arch(entry.arch, entry.input_shape, entry.num_classes).eval()
    assert module_params(model) <= MAX_PARAMS and module_macs(model, entry.input_shape) <= MAX_MACS
    spec = analyze(model, torch.randn(8, *entry.input_shape))
    decisions = [u for u in spec.units if not u.frozen]
    assert len(decisions) >= 2 and sum(u.prunable for u in decisions) >= 1
    assert isinstance(model.head, nn.Linear) and model.head.out_features == entry.num_classes


def _unit_structure(model: nn.Module, input_shape: tuple[int, ...]) -> tuple:
    """Analysis without module names: per unit (channels, step, prunable), per layer its shape."""
    spec = analyze(model, torch.randn(4, *input_shape))
    units = tuple((u.channels, u.channel_step, u.prunable, u.frozen, len(u.layers)) for u in spec.units)
    layers = tuple((l.kind, l.in_channels, l.out_channels, l.kernel_size, l.stride, l.groups) for l in spec.layers)
    return units, layers


def test_no_generated_network_equals_a_held_out_family_model(many):
    assert {e.family for e in HELD_OUT} == {"mobilenetv2", "transformer"}

    def built(entry):
        if entry.arch is not None:
            return build_arch(entry.arch, entry.input_shape, entry.num_classes)
        return build_model(entry.family, entry.input_shape, entry.num_classes, entry.width, entry.depth)

    held_out = {layer_signature(built(e), e.input_shape) for e in HELD_OUT}
    assert len(held_out) == len(HELD_OUT)
    assert not held_out & {layer_signature(built(e), e.input_shape) for e in many}
    digits = [e for e in HELD_OUT if e.dataset == "digits"]
    held_units = {_unit_structure(built(e), e.input_shape) for e in digits}
    assert not held_units & {_unit_structure(built(e), e.input_shape) for e in ANALYSED if e.dataset == "digits"}


def test_the_signature_sees_a_mobilenetv2_in_disguise_and_the_sampler_rejects_it():
    def inverted(width, stride):
        return BlockSpec("inverted", width, 3, stride, expansion=4)

    blocks = (inverted(8, 1), inverted(16, 2), inverted(32, 2), BlockSpec("conv", 64, 1))
    mimic = ArchSpec("image", BlockSpec("conv", 8, 3), blocks, "avg")
    torch.manual_seed(0)
    net = build_arch(mimic, (1, 8, 8), 10)
    assert layer_signature(net, (1, 8, 8)) == layer_signature(build_model("mobilenetv2", (1, 8, 8), 10, 8, 1), (1, 8, 8))
    assert not generator._acceptable(mimic, (1, 8, 8), 10)


def test_the_grammar_never_emits_attention_but_covers_every_other_kind(many):
    assert not any("attention" in kind or "attn" in kind for kind in BLOCK_KINDS)
    with pytest.raises(InvalidArch, match="unknown kind 'attention'"):
        BlockSpec("attention", 16)
    kinds = Counter(block.kind for entry in many for block in entry.arch.blocks)
    assert set(kinds) == set(BLOCK_KINDS)
    for entry in many:
        modules = build_arch(entry.arch, entry.input_shape, entry.num_classes).modules()
        assert not any(isinstance(m, (Attention, nn.MultiheadAttention)) for m in modules)
    stems = [e.arch.stem for e in many if e.arch.stem]
    assert {s.stride for s in stems} == {1, 2} and {e.arch.pool for e in many} == {"avg", "flatten"}
    assert {b.kernel for e in many for b in e.arch.blocks if b.kind == "conv"} == {1, 3, 5}
    assert {b.norm for e in many for b in e.arch.blocks if b.kind == "mlp"} == {"batch", "layer"}
    assert {e.dataset for e in many} == set(generator.GENERATED_DATASETS)
    assert all(b.kind != "dilated" for e in many if e.arch.input_kind == "image" for b in e.arch.blocks)


def test_bad_specs_and_entries_name_the_problem():
    with pytest.raises(InvalidArch, match=r"kernel must be one of \(1, 3, 5\).*stride must be 1"):
        BlockSpec("se", 16, kernel=2, stride=2)
    with pytest.raises(InvalidArch, match="'dilated' blocks are 1-D"):
        ArchSpec("image", BlockSpec("conv", 8), (BlockSpec("dilated", 8, dilation=2),) * 2)
    with pytest.raises(InvalidArch, match="mlp blocks must come after every conv block"):
        ArchSpec("image", BlockSpec("conv", 8), (BlockSpec("mlp", 8, 1), BlockSpec("conv", 8)))
    grouped = ArchSpec("image", BlockSpec("conv", 6), (BlockSpec("grouped", 8, groups=4), BlockSpec("se", 8, 1)))
    with pytest.raises(InvalidArch, match="divisible"):
        build_arch(grouped, (1, 8, 8), 10)
    with pytest.raises(ZooError, match="'generated' needs an arch"):
        ZooEntry("gen-x", "generated", "digits", width=8, depth=2, epochs=1)
    with pytest.raises(ZooError, match=r"spec is for image input \(C, H, W\), got \(1, 40\)"):
        replace(generated_entry(0), dataset="mnist1d")


def test_generated_ids_resolve_with_seeds_like_zoo_ids():
    assert get_entry("gen-0007-shapes") == generated_entry(7) and generated_entry(7).dataset == "shapes"
    assert get_entry("gen-0007-digits").arch == sample_arch(7, "digits")
    reseeded = get_entry("gen-0007-shapes-s2")
    assert reseeded == reseed(generated_entry(7), 2) and reseeded.seed == 2 and reseeded.id == "gen-0007-shapes-s2"
    assert reseed(reseeded, 0) == generated_entry(7)


def test_build_cache_and_load_round_trip(tmp_path):
    entry = replace(generated_entry(0), epochs=2, max_train_samples=256)
    (record,) = build_zoo([entry], tmp_path, progress=False)
    assert ZooRecord.from_json((tmp_path / f"{entry.id}.json").read_text()) == record
    assert record.entry.arch == entry.arch and record.params == module_params(build_arch(entry.arch, (1, 8, 8), 10))
    model, data, loaded = load_zoo_model(entry, tmp_path, build_if_missing=False)
    assert loaded == record and model_accuracy(model, data.test) == record.test_accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{entry.id}.json", f"{entry.id}.safetensors"]


def test_below_floor_is_cached_and_skipped_not_an_error_and_not_retrained(tmp_path, monkeypatch):
    monkeypatch.setitem(generator.GENERATED_RECIPES, "digits", {"epochs": 1, "max_train_samples": 128})
    monkeypatch.setitem(GENERATED_FLOORS, "digits", 1.0)
    result = build_generated(1, tmp_path, progress=False)
    assert not result.kept and [r.entry.id for r in result.skipped] == ["gen-0000-digits"]
    assert (tmp_path / "gen-0000-digits.safetensors").exists()
    assert generator.usable_generated(1, tmp_path) == ()
    again = build_generated(1, tmp_path, progress=False)
    assert again == result  # served from the cache: the same records, nothing retrained
    monkeypatch.setitem(GENERATED_FLOORS, "digits", 0.0)
    assert generator.usable_generated(1, tmp_path) == (result.skipped[0].entry,)


def test_cli_lists_and_builds_generated_models(tmp_path, capsys, monkeypatch):
    assert main(["zoo", "list", "--generated", "4", "--format", "csv", "--cache", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(",generated," in line for line in lines[1:])
    assert [line.split(",")[0] for line in lines[1:]] == ["gen-0000-digits", "gen-0001-mnist1d", "gen-0002-mnist", "gen-0003-shapes"]
    assert main(["zoo", "build", "--generated", "0", "--cache", str(tmp_path)]) == 2
    assert "N >= 1" in capsys.readouterr().err
    monkeypatch.setitem(generator.GENERATED_RECIPES, "digits", {"epochs": 1, "max_train_samples": 128})
    monkeypatch.setitem(GENERATED_FLOORS, "digits", 1.0)
    assert main(["zoo", "build", "--generated", "1", "--cache", str(tmp_path)]) == 0
    assert "1 generated below their floor, skipped for training" in capsys.readouterr().out

"""The zoo: catalogue, deterministic build, resume after interruption, integrity, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from metacompress.cli import build_parser, main
from metacompress.envs.zoo import cache as zoo
from metacompress.envs.zoo.training import model_accuracy
from metacompress.envs.zoo.families import FAMILIES
from metacompress.envs.zoo.cache import ZooRecord, build_zoo, cached_record, default_cache_dir, load_zoo_model, zoo_table
from metacompress.envs.zoo.catalog import QUICK, ZOO, ZooEntry, get_entry, reseed
from metacompress.errors import CacheCorrupted, UnknownName, ZooError


def tiny(id: str = "tiny-mlp", family: str = "mlp", **kw) -> ZooEntry:
    """A model that trains in well under a second (256 digits, 3 epochs)."""
    recipe = {"width": 8, "depth": 1, "epochs": 3, "batch_size": 32, "lr": 1e-2, "max_train_samples": 256} | kw
    return ZooEntry(id, family, "digits", **recipe)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_catalogue_has_40_models_over_six_families_each_with_a_floor_above_chance():
    assert len(ZOO) >= 40 and len({e.id for e in ZOO}) == len(ZOO)
    assert {e.family for e in ZOO} == set(FAMILIES)
    assert {e.family for e in QUICK} == set(FAMILIES) and set(QUICK) <= set(ZOO)
    assert all(e.min_test_accuracy > 0.1 for e in ZOO)  # chance is 0.1 on every dataset
    assert get_entry("resnet-w16-d2-mnist").family == "resnet"


def test_seed_suffix_selects_another_seed_and_unknown_ids_name_close_matches():
    assert get_entry("resnet-w16-d2-mnist-s3") == reseed(get_entry("resnet-w16-d2-mnist"), 3)
    assert get_entry("resnet-w16-d2-mnist-s3").seed == 3
    with pytest.raises(UnknownName, match="resnet-w16-d2-mnist"):
        get_entry("resnet-w16-d2-mnst")
    with pytest.raises(UnknownName, match="no zoo model"):
        load_zoo_model("nothing-like-it")


def test_invalid_entry_reports_every_problem_at_once():
    with pytest.raises(ZooError, match=r"unknown family 'resnt'.*epochs must be >= 1"):
        ZooEntry("x", "resnt", "digits", width=8, depth=1, epochs=0)
    with pytest.raises(ZooError, match="fits mnist1d, not 'digits'"):
        ZooEntry("x", "cnn1d", "digits", width=8, depth=1, epochs=1)


def test_build_writes_both_files_and_load_reproduces_the_record(tmp_path):
    (record,) = build_zoo([tiny()], tmp_path, progress=False)
    assert record.sha256 == sha(tmp_path / "tiny-mlp.safetensors")
    assert ZooRecord.from_json((tmp_path / "tiny-mlp.json").read_text()) == record
    assert record.params == 64 * 8 + 8 + 16 + 80 + 10 and record.macs == 64 * 8 + 80
    model, data, loaded = load_zoo_model(tiny(), tmp_path, build_if_missing=False)
    assert loaded == record and not model.training
    assert model_accuracy(model, data.test) == record.test_accuracy > 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-mlp.json", "tiny-mlp.safetensors"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = build_zoo([tiny()], tmp_path / "a", progress=False)[0]
    again = build_zoo([tiny()], tmp_path / "b", progress=False)[0]
    other = build_zoo([tiny(seed=1)], tmp_path / "c", progress=False)[0]
    assert first.sha256 == again.sha256 != other.sha256


def test_build_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_zoo([tiny()], tmp_path, progress=False)
    load_zoo_model(tiny(), tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_interrupted_build_resumes_without_retraining_finished_models(tmp_path, monkeypatch):
    real, trained = zoo._train_entry, []

    def interrupt_second(entry):
        if trained:
            raise KeyboardInterrupt
        trained.append(entry.id)
        return real(entry)

    monkeypatch.setattr(zoo, "_train_entry", interrupt_second)
    entries = [tiny("tiny-a"), tiny("tiny-b", family="resnet")]
    with pytest.raises(KeyboardInterrupt):
        build_zoo(entries, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-a.json", "tiny-a.safetensors"]  # no temp file left
    first_mtime = (tmp_path / "tiny-a.safetensors").stat().st_mtime_ns

    trained.clear()
    monkeypatch.setattr(zoo, "_train_entry", lambda entry: trained.append(entry.id) or real(entry))
    records = build_zoo(entries, tmp_path, progress=False)
    assert trained == ["tiny-b"] and [r.entry.id for r in records] == ["tiny-a", "tiny-b"]
    assert (tmp_path / "tiny-a.safetensors").stat().st_mtime_ns == first_mtime


def test_corrupted_weights_raise_naming_the_file_and_the_fix(tmp_path):
    build_zoo([tiny()], tmp_path, progress=False)
    weights = tmp_path / "tiny-mlp.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CacheCorrupted, match=r"tiny-mlp\.safetensors is corrupted.*zoo build --force tiny-mlp"):
        load_zoo_model(tiny(), tmp_path)
    with pytest.raises(CacheCorrupted, match="1 cached model"):
        build_zoo([tiny()], tmp_path, progress=False)
    (record,) = build_zoo([tiny()], tmp_path, progress=False, force=True)
    assert sha(weights) == record.sha256
    load_zoo_model(tiny(), tmp_path, build_if_missing=False)


def test_unreadable_record_is_a_corrupted_cache(tmp_path):
    build_zoo([tiny()], tmp_path, progress=False)
    (tmp_path / "tiny-mlp.json").write_text("{ not json")
    with pytest.raises(CacheCorrupted, match=r"tiny-mlp\.json is not a valid zoo record"):
        load_zoo_model(tiny(), tmp_path)


def test_changed_recipe_is_rebuilt_not_served_stale(tmp_path):
    build_zoo([tiny()], tmp_path, progress=False)
    assert cached_record(tiny(), tmp_path) is not None
    slower = tiny(epochs=4)
    assert cached_record(slower, tmp_path) is None
    (record,) = build_zoo([slower], tmp_path, progress=False)
    assert record.entry.epochs == 4 and json.loads((tmp_path / "tiny-mlp.json").read_text())["entry"]["epochs"] == 4


@pytest.mark.parametrize("key, value", [("format", 1), ("training_revision", -1)])
def test_records_of_older_code_are_rebuilt_not_errors(tmp_path, key, value):
    build_zoo([tiny()], tmp_path, progress=False)
    meta = tmp_path / "tiny-mlp.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {key: value}))
    assert cached_record(tiny(), tmp_path) is None
    (record,) = build_zoo([tiny()], tmp_path, progress=False)
    assert cached_record(tiny(), tmp_path) == record


def test_model_below_its_floor_fails_the_build_and_is_not_cached(tmp_path):
    with pytest.raises(ZooError, match="tiny-mlp reached test accuracy .* below its floor 1.00"):
        build_zoo([tiny(min_test_accuracy=1.0)], tmp_path, progress=False)
    assert not list(tmp_path.glob("tiny-mlp.*"))


def test_missing_model_without_building_says_how_to_build(tmp_path):
    with pytest.raises(ZooError, match="run `metacompress zoo build tiny-mlp`"):
        load_zoo_model(tiny(), tmp_path, build_if_missing=False)
    with pytest.raises(ZooError, match="repeated: tiny-mlp"):
        build_zoo([tiny(), tiny()], tmp_path, progress=False)


def test_cache_dir_defaults_to_the_environment_root(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "zoo"
    monkeypatch.delenv("METACOMPRESS_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "metacompress", "zoo")


def test_table_lists_uncached_models_with_their_size(tmp_path):
    frame = zoo_table(QUICK, tmp_path)
    assert list(frame["id"]) == [e.id for e in QUICK] and not frame["cached"].any()
    assert frame.set_index("id").loc["mlp-w64-d1-digits", "params"] == 64 * 64 + 64 + 128 + 640 + 10


def test_cli_list_csv_and_build_needs_a_selection(tmp_path, capsys):
    assert main(["zoo", "list", "--quick", "--format", "csv", "--cache", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "id,family,dataset,params,macs,test_accuracy,cached" and len(lines) == len(QUICK) + 1
    assert main(["zoo", "build", "--cache", str(tmp_path)]) == 2
    assert "--quick, --all, or zoo ids" in capsys.readouterr().err
    assert main(["zoo", "build", "resnet-w16-d2-mnst", "--cache", str(tmp_path)]) == 2


@pytest.mark.parametrize("action", ["build", "list"])
def test_cli_help_ends_with_an_example(action):
    zoo_parser = build_parser()._subparsers._group_actions[0].choices["zoo"]
    sub = zoo_parser._subparsers._group_actions[0].choices[action]
    assert sub.epilog.startswith("example: metacompress zoo " + action)

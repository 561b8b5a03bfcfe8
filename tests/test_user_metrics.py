"""Issue 14 items 3-6: user metrics and output kinds, accuracy-target mode, DataLoader inputs, devices."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import metacompress as mc
from metacompress.accuracy_target import MaxDrop, walk_budgets
from metacompress.cli import main
from metacompress.compressors import recovery
from metacompress.compressors.export import calibration_batches
from metacompress.compressors.metrics import TOP1, detect_output_kind, distillation_loss, r_squared, task_loss
from metacompress.data import as_splits
from metacompress.devices import resolve_device
from metacompress.errors import InvalidCalibration, InvalidData, MetacompressError


def neg_mse(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return -float(((outputs - targets) ** 2).mean())


def within_one_bin(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(((outputs.argmax(dim=-1) - targets).abs() <= 1).float().mean())


def fitted(model: nn.Module, x: torch.Tensor, loss, steps: int = 200) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(x)).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def regression():
    torch.manual_seed(0)
    x = torch.randn(240, 6)
    y = torch.sigmoid(x @ torch.randn(6)).unsqueeze(1) * 2 - 0.5
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    return fitted(model, x, lambda out: F.mse_loss(out, y)), mc.splits_from_arrays(x, y, seed=0)


@pytest.fixture(scope="module")
def probabilities():
    """A softmax head over 8 ordered bins, scored by within-one-bin accuracy (the pitch-CNN shape, tiny)."""
    torch.manual_seed(0)
    x = torch.randn(240, 6)
    y = ((x[:, 0] + 2) * 2).clamp(0, 7).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Softmax(dim=-1))
    return fitted(model, x, lambda out: F.nll_loss(torch.log(out + 1e-9), y)), mc.splits_from_arrays(x, y, seed=0)


def compress(model, data, **kwargs):
    kwargs = {"hardware": "m7-mcu", "budget": "size=0.5", "finetune_steps": 10, "planner": mc.agents.UniformPlanner(), **kwargs}
    return mc.compress(model, data.train.x[:8], data, **kwargs)


def test_a_regression_model_is_scored_by_the_users_metric_and_distilled_with_mse(regression, monkeypatch):
    model, data = regression
    used = []
    original = recovery.distillation_loss
    monkeypatch.setattr(recovery, "distillation_loss", lambda kind, *a, **k: used.append(kind) or original(kind, *a, **k))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compress(model, data, metric=neg_mse)
    s = result.summary
    assert (s["metric"], s["output_kind"], s["distillation"]) == ("neg_mse", "regression", "MSE")
    with torch.no_grad():
        assert s["test_accuracy_original"] == pytest.approx(neg_mse(model(data.test.x), data.test.y), abs=1e-6)
        assert s["test_accuracy_compressed"] == pytest.approx(neg_mse(result.model(data.test.x), data.test.y), abs=1e-6)
    assert -1 < s["test_accuracy_compressed"] < s["test_accuracy_original"] and set(used) == {"regression"} and len(used) == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the user's model is untouched
    assert "| neg_mse | original | compressed | change |" in mc.report.markdown_report(s, result.decisions)


def test_a_probability_model_is_detected_distilled_with_mse_and_scored_by_the_users_metric(probabilities, monkeypatch):
    model, data = probabilities
    used = []
    original = recovery.distillation_loss
    monkeypatch.setattr(recovery, "distillation_loss", lambda kind, *a, **k: used.append(kind) or original(kind, *a, **k))
    result = compress(model, data, metric=within_one_bin)
    assert (result.summary["output_kind"], result.summary["distillation"]) == ("probabilities", "MSE")
    assert set(used) == {"probabilities"}
    with torch.no_grad():
        assert result.summary["test_accuracy_original"] == within_one_bin(model(data.test.x), data.test.y) > 0.8


def test_a_user_loss_replaces_the_output_kinds_distillation(regression):
    model, data = regression
    calls = []

    def l1(student, teacher):
        calls.append(student.shape)
        return (student - teacher).abs().mean()

    result = compress(model, data, metric=neg_mse, loss=l1, finetune_steps=3)
    assert result.summary["distillation"] == "user loss" and calls == [torch.Size([120, 1])] * 3  # all 120 train samples per step


def test_distillation_and_task_losses_follow_the_output_kind():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    kl = F.kl_div(F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1), log_target=True, reduction="batchmean") * 4
    assert torch.allclose(distillation_loss("logits", student, teacher), kl)
    assert torch.allclose(distillation_loss("probabilities", student, teacher), F.mse_loss(student, teacher))
    assert torch.allclose(task_loss("logits", student, torch.tensor([0, 1, 2, 3, 0])), F.cross_entropy(student, torch.tensor([0, 1, 2, 3, 0])))
    assert torch.allclose(task_loss("regression", student[:, :1], teacher[:, 0]), F.mse_loss(student[:, :1], teacher[:, :1]))
    with pytest.raises(MetacompressError, match="neither class ids nor shaped like the outputs"):
        task_loss("regression", student, torch.randn(5, 3))
    with pytest.raises(MetacompressError, match="output kind 'softmax' is unknown"):
        distillation_loss("softmax", student, teacher)
    assert detect_output_kind(torch.softmax(student, -1)) == "probabilities"
    assert detect_output_kind(student[:, 0] * 5) == "regression"
    assert detect_output_kind(torch.sigmoid(student)) == "logits"  # ambiguous: the documented default


def test_a_metric_that_fails_or_returns_nan_is_named_with_the_shapes(regression):
    model, data = regression

    def bad(outputs, targets):
        raise ValueError("boom")

    with pytest.raises(MetacompressError, match=r"metric 'bad' failed on outputs \(60, 1\) and targets \(60, 1\): ValueError: boom|metric 'bad' failed on outputs \(60, 1\) and targets \(60, 1\): boom"):
        compress(model, data, metric=bad)
    with pytest.raises(MetacompressError, match="returned nan"):
        compress(model, data, metric=lambda o, t: float("nan"))


def test_real_valued_targets_are_scored_by_r2_and_recovered_as_a_regression_by_default(regression):
    model, data = regression
    s = compress(model, data).summary
    assert (s["metric"], s["output_kind"], s["distillation"]) == ("R2", "regression", "MSE")
    with torch.no_grad():
        assert s["test_accuracy_original"] == pytest.approx(r2_score(data.test.y.numpy(), model(data.test.x).numpy()), abs=1e-6)
    assert 0.5 < s["test_accuracy_original"] <= 1 and s["test_accuracy_compressed"] < s["test_accuracy_original"]


def test_r2_pools_every_output_around_its_own_mean():
    targets = torch.tensor([[0.0, 10.0], [2.0, 14.0], [4.0, 12.0]])  # column means 2 and 12: SST = 8 + 8
    outputs = targets + torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # SSE = 3
    assert r_squared(outputs, targets) == pytest.approx(1 - 3 / 16)
    assert r_squared(targets.mean(dim=0).expand(3, 2), targets) == 0.0


def test_top1_still_refuses_non_class_targets_and_r2_targets_shaped_unlike_the_outputs(regression):
    model, data = regression
    with pytest.raises(InvalidData, match="top-1 accuracy needs integer class ids.*pass metric=fn"):
        compress(model, data, metric=TOP1)
    pairs = mc.splits_from_arrays(data.train.x, data.train.y.repeat(1, 2), seed=0)
    with pytest.raises(InvalidData, match=r"train.y has \(2,\) values per sample, but the outputs have \(1,\): R2 compares"):
        compress(model, pairs)


def test_rare_classes_and_regression_targets_fall_back_to_a_seeded_unstratified_split(caplog):
    x, y = torch.randn(100, 3), torch.arange(100) % 40  # 40 classes: some have 2 samples, too few to stratify
    with caplog.at_level(logging.WARNING, logger="metacompress.data"):
        first, second = mc.splits_from_arrays(x, y, seed=3), mc.splits_from_arrays(x, y, seed=3)
    assert "without stratification" in caplog.text and first.name == "user-unstratified"
    assert torch.equal(first.search.x, second.search.x) and (len(first.train), len(first.search), len(first.test)) == (50, 25, 25)
    floats = mc.splits_from_arrays(x, torch.randn(100, 2), seed=0)
    assert floats.train.y.dtype == torch.float32 and floats.train.y.shape == (50, 2)
    assert mc.splits_from_arrays(x, (x[:, 0] > 0).long()).name == "user"  # class ids that can be stratified still are


def test_dataloaders_datasets_and_array_pairs_give_the_plan_tensors_give(probabilities):
    model, data = probabilities
    loaders = {name: DataLoader(TensorDataset(getattr(data, name).x, getattr(data, name).y), batch_size=32) for name in ("train", "search", "test")}
    datasets = {"train": TensorDataset(data.train.x, data.train.y), "search": loaders["search"], "test": TensorDataset(data.test.x, data.test.y)}
    pairs = {"train": (data.train.x, data.train.y), "search": [data.search.x, data.search.y],
             "test": (data.test.x.double().numpy(), data.test.y.numpy())}  # numpy float64 inputs become float32
    kwargs = {"planner": mc.agents.HawqPlanner(), "budget": "size=0.5", "finetune_steps": 0}
    plans = [compress(model, d, **kwargs).plan for d in (data, as_splits(loaders), as_splits(datasets), as_splits(pairs))]
    assert plans[0] == plans[1] == plans[2] == plans[3]
    assert as_splits(pairs).test.x.dtype == torch.float32
    n = len(data.train.x)
    with pytest.raises(InvalidData, match=f"the train split is an \\(x, y\\) pair with {n} inputs and {n - 1} targets; pass one target per input"):
        as_splits({**pairs, "train": (data.train.x, data.train.y[:-1])})
    assert mc.compress(model, data.train.x[:8], loaders, hardware="m7-mcu", **kwargs).plan == plans[0]  # a dict of loaders directly
    with pytest.raises(InvalidData, match="the search split is a int; pass an object with .x and .y"):
        as_splits({"train": loaders["train"], "search": 3, "test": loaders["test"]})
    with pytest.raises(InvalidData, match="data has no test split"):
        as_splits({"train": loaders["train"], "search": loaders["search"]})


def test_export_calibration_takes_a_tensor_a_list_or_a_dataloader_and_refuses_the_rest():
    x = torch.randn(40, 6)
    assert [b.shape[0] for b in calibration_batches(x, (6,))] == [40]
    assert [b.shape[0] for b in calibration_batches(list(x.split(16)), (6,))] == [16, 16, 8]
    assert [b.shape[0] for b in calibration_batches(DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=16), (6,))] == [16, 16, 8]
    with pytest.raises(InvalidCalibration, match="calibration is a dict; pass one tensor batch of shape \\(N, 6\\), a list"):
        calibration_batches({"x": x}, (6,))
    with pytest.raises(InvalidCalibration, match=r"batch 0: \(40, 5\)"):
        calibration_batches(torch.randn(40, 5), (6,))


def test_max_drop_reads_points_and_percentages_and_refuses_nonsense():
    assert MaxDrop.parse("1.0").floor(0.9) == pytest.approx(0.89)
    assert MaxDrop.parse("1%").floor(0.9) == pytest.approx(0.891)
    assert MaxDrop.parse(2).floor(-0.5) == pytest.approx(-0.52) and str(MaxDrop.parse("5%")) == "5%"
    for bad in ("-1", "abc", "1 %%", ""):
        with pytest.raises(MetacompressError, match="max drop"):
            MaxDrop.parse(bad)


def test_the_walk_returns_the_cheapest_plan_meeting_the_target_within_six_tries():
    calls = []

    def attempt(fraction):  # metric rises with the budget; plans use 90% of theirs
        calls.append(fraction)
        return 0.9 * fraction, 0.9 - 0.3 * (1 - fraction) ** 2

    walk = walk_budgets(attempt, 0.05, 0.9, MaxDrop(5.0))  # floor 0.85: met from fraction ~0.59 up
    assert len(calls) == 6 and calls[:2] == [0.05, 1.0] and walk.met
    chosen = walk.points[walk.chosen]
    assert chosen.metric >= 0.85 and chosen.cost_ratio == min(p.cost_ratio for p in walk.points if p.meets)
    assert 0.59 < chosen.fraction < 0.75 and [r["cost_ratio"] for r in walk.rows()] == sorted(p.cost_ratio for p in walk.points)


def test_the_walk_stops_at_once_when_the_cheapest_plan_meets_and_gives_a_best_effort_when_none_does():
    assert len(walk_budgets(lambda f: (f, 0.9), 0.1, 0.9, MaxDrop(1.0)).points) == 1
    walk = walk_budgets(lambda f: (f, 0.5 + 0.1 * f), 0.1, 0.9, MaxDrop(1.0))
    assert not walk.met and [p.fraction for p in walk.points] == [0.1, 1.0] and walk.points[walk.chosen].fraction == 1.0
    assert "no plan met the target" in walk.message and "best effort" in walk.message


def test_compress_with_max_drop_returns_the_cheapest_recovered_plan_and_saves_the_curve(regression, tmp_path):
    model, data = regression
    result = compress(model, data, metric=neg_mse, budget="bitops", max_drop=0.5, finetune_steps=20)
    s = result.summary
    rows = s["tradeoff"]
    chosen = [r for r in rows if r["chosen"]]
    assert s["target_met"] and len(chosen) == 1 and 2 <= len(rows) <= 6
    assert chosen[0]["cost_ratio"] == min(r["cost_ratio"] for r in rows if r["meets"]) == pytest.approx(s["cost_ratio"])
    assert chosen[0]["metric"] >= s["target_floor"] == pytest.approx(s["search_accuracy_original"] - 0.005)
    assert s["budget"] == f"bitops={chosen[0]['fraction'] * (1 + 1e-9):g}" and s["within_budget"]
    out = result.save(tmp_path / "run")
    assert (out / "tradeoff.png").stat().st_size > 5_000 and "## Accuracy target" in (out / "report.md").read_text()


def test_compress_with_an_unreachable_max_drop_returns_the_best_effort_plan_saying_so(regression, caplog):
    """Targets are the model's own outputs: the original scores exactly 0, every quantized plan below it."""
    model, data = regression
    with torch.no_grad():
        own = type(data)(data.name, data.input_shape, 0, *(type(data.train)(s.x, model(s.x)) for s in (data.train, data.search, data.test)), 0)
    with caplog.at_level(logging.WARNING, logger="metacompress.accuracy_target"):
        result = compress(model, own, metric=neg_mse, budget="bitops", max_drop=0.0, finetune_steps=5)
    s = result.summary
    assert s["search_accuracy_original"] == 0.0 and s["target_met"] is False and "no plan met the target" in caplog.text
    best = max(s["tradeoff"], key=lambda r: r["metric"])
    assert best["chosen"] and best["fraction"] == 1.0 and len(s["tradeoff"]) == 2 and result.plan is not None


def test_devices_resolve_or_fail_clearly_before_any_work(regression, monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(MetacompressError, match="device 'tpu' is unknown; use one of cpu, cuda, auto"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    model, data = regression
    monkeypatch.setattr(mc.api, "compute_probes", lambda *a: pytest.fail("work started"))
    with pytest.raises(MetacompressError, match="has no CUDA; use --device cpu or auto"):
        compress(model, data, metric=neg_mse, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_plan_and_its_cost_do_not_depend_on_the_device(probabilities):
    model, data = probabilities
    kwargs = {"planner": mc.agents.HawqPlanner(), "budget": "size=0.5", "finetune_steps": 5, "metric": within_one_bin}
    cpu, cuda = compress(model, data, **kwargs), compress(model, data, device="cuda", **kwargs)
    assert cpu.plan == cuda.plan and cpu.summary["cost_ratio"] == cuda.summary["cost_ratio"]
    assert next(cuda.model.parameters()).device.type == "cpu" and cuda.summary["device"].startswith("cuda")


METRIC_FILE = """
import torch
from torch import nn
from metacompress import splits_from_arrays

def neg_mse(outputs, targets):
    return -float(((outputs - targets) ** 2).mean())

def factory():
    torch.manual_seed(0)
    x = torch.randn(240, 6)
    y = torch.sigmoid(x @ torch.randn(6)).unsqueeze(1) * 2 - 0.5
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model.eval(), splits_from_arrays(x, y, seed=0)
"""


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--metric", "nocolon"], "is not module:function"),
        (["--max-drop", "lots"], "cannot read max drop 'lots'"),
        (["--max-drop", "-1"], "cannot read max drop"),
        (["--device", "tpu"], "'tpu' is not a device; use one of cpu, cuda, auto"),
        (["--output-kind", "softmax"], "invalid choice: 'softmax'"),
    ],
    ids=["metric-form", "max-drop-text", "max-drop-negative", "device", "output-kind"],
)
def test_apply_refuses_bad_flags_at_parse_time(flags, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["apply", *flags])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_apply_refuses_a_metric_it_cannot_import_or_a_missing_cuda_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scores.py").write_text(METRIC_FILE)
    monkeypatch.setattr("metacompress.sources.load_model_source", lambda *a: pytest.fail("the model was built"))
    assert main(["apply", "--metric", "scores.py:missing", "--out", "runs/m"]) == 2
    assert "has no function 'missing'" in capsys.readouterr().err
    assert main(["apply", "--metric", "no_such_module_xyz:f", "--out", "runs/m"]) == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["apply", "--device", "cuda", "--out", "runs/m"]) == 2
        assert "has no CUDA" in capsys.readouterr().err


def test_apply_with_a_user_metric_and_max_drop_writes_the_tradeoff(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scores.py").write_text(METRIC_FILE)
    code = main(["apply", "--model", "scores.py:factory", "--metric", "scores.py:neg_mse", "--max-drop", "1%", "--budget", "bitops",
                 "--hardware", "m7-mcu", "--method", "uniform", "--finetune-steps", "10", "--device", "cpu", "--out", "runs/m"])
    out = capsys.readouterr().out
    assert code == 0 and "proxy neg_mse" in out and "## Accuracy target: at most 1% below the original" in out
    summary = __import__("json").loads((tmp_path / "runs/m/summary.json").read_text())
    assert summary["metric"] == "neg_mse" and summary["max_drop"] == "1%" and (tmp_path / "runs/m/tradeoff.csv").exists()
    assert summary["target_floor"] == pytest.approx(summary["search_accuracy_original"] * 1.01)  # a negative metric: 1% of |value| lower

"""``compress`` and ``CompressionResult.save`` (issue 13 items 7 and 9)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import metacompress as mc
from metacompress import api
from metacompress.errors import EvaluationBudgetError, InvalidData, UnsupportedModel
from metacompress.compressors.runs import MANIFEST, read_manifest


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 3))
    x = torch.randn(400, 12)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return model, mc.splits_from_arrays(x, y, seed=0)


def test_the_readme_baseline_call_works_and_keeps_the_users_mode(task):
    """The README's compress(..., planner=HawqPlanner()) raised 'got evaluations=0'; compress left the model in eval mode."""
    model, data = task
    model.train()
    model[3].eval()  # a mixed state: every module gets its own mode back
    result = mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", finetune_steps=0,
                         planner=mc.agents.HawqPlanner())
    assert result.summary["planner"] == "hawq" and result.summary["evaluations_used"] == 1
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True]  # Sequential first


def test_every_fixed_budget_kind_declares_its_budget_as_plans_default():
    """compress(planner=X()) with few_shot=0 uses the default of X.plan: the registry's fixed budgets."""
    from metacompress.agents.registry import KINDS

    assert api._default_evaluations(mc.agents.HawqPlanner()) == KINDS["hawq"][1]
    assert api._default_evaluations(mc.agents.UniformPlanner()) == KINDS["uniform"][1]


def test_a_planner_without_a_default_budget_is_refused_before_the_probes(task, monkeypatch):
    model, data = task
    monkeypatch.setattr(api, "compute_probes", lambda *a: pytest.fail("the probes ran before the check"))
    with pytest.raises(EvaluationBudgetError, match="planner 'random' needs proxy evaluations .*pass few_shot=N"):
        mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.RandomSearchPlanner())


def test_save_writes_the_apply_run_and_few_shot_raw_columns_are_filled(task, tmp_path):
    """CompressionResult.save is what `apply` writes; decisions.csv's raw_* columns were empty for few-shot runs."""
    model, data = task
    result = mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", finetune_steps=0,
                         policy="default", few_shot=2)
    decided = result.decisions[~result.decisions["frozen"]]
    assert len(decided) == 1 and decided[["raw_prune", "raw_w_bits", "raw_a_bits"]].notna().all().all()
    out = result.save(tmp_path / "run", config={"budget": "size=0.5"}, builder={"factory": "f.py:f"})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "decisions.csv", "decisions.json", MANIFEST, "model", "plan.json", "report.md", "summary.json"])
    assert read_manifest(out)["kind"] == "apply" and read_manifest(out / "model")["kind"] == "model"
    assert json.loads((out / "config.json").read_text())["config"] == {"budget": "size=0.5"}
    assert json.loads((out / "summary.json").read_text())["within_budget"]


def test_an_empty_search_split_is_refused_before_any_work(task):
    """Issue 13.3: an empty search split scored every plan 0.0 and the planner chose blind."""
    model, data = task
    empty = type(data.search)(data.search.x[:0], data.search.y[:0])
    blind = type(data)(data.name, data.input_shape, data.num_classes, data.train, empty, data.test, data.seed)
    with pytest.raises(InvalidData, match="the search split has 0 samples, at least 20 are needed"):
        mc.compress(model, data.train.x[:8], blind, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.HawqPlanner())


def test_labels_outside_the_models_outputs_are_refused_naming_the_range(task):
    """Issue 13.4: labels beyond the output size gave a wrong test accuracy and no error."""
    model, data = task
    shifted = type(data.test)(data.test.x, data.test.y + 5)
    wrong = type(data)(data.name, data.input_shape, data.num_classes, data.train, data.search, shifted, data.seed)
    with pytest.raises(InvalidData, match=r"test.y holds labels 5..7, but the model outputs 3 classes \(0..2\)"):
        mc.compress(model, data.train.x[:8], wrong, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.HawqPlanner())


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(12, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(x)) * mask)


@pytest.mark.parametrize("make, message", [
    (lambda m: torch.jit.script(m), "TorchScript module .* pass the nn.Module it was scripted from"),
    (lambda m: torch.compile(m), r"torch.compile wrapper, .* pass the module it wraps \(model._orig_mod\)"),
    (lambda m: nn.Sequential(nn.LazyLinear(3)), r"uninitialized lazy parameters \(0.weight, 0.bias\).* run a batch through the model"),
    (lambda m: copy.deepcopy(m).double(), r"torch.float64 parameters; .* pass a float32 copy"),
    (lambda m: TwoInputs(), r"rejects the example input of shape \(\d+, 12\): .*missing 1 required positional argument: 'mask'.* wrap a model of several inputs"),
])
def test_a_model_no_stage_can_use_is_refused_before_any_work_naming_the_fix(task, make, message):
    model, data = task
    with pytest.raises(UnsupportedModel, match=message):
        mc.compress(make(model.eval()), data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.HawqPlanner())


def test_integer_images_are_refused_naming_the_float_conversion():
    """uint8 images become long tensors (the form token ids take); a conv model then needs floats."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    x = torch.randint(0, 256, (120, 1, 8, 8), dtype=torch.uint8)
    data = mc.splits_from_arrays(x.numpy(), (torch.arange(120) % 3).numpy(), seed=0)
    with pytest.raises(UnsupportedModel, match=r"The inputs are integers, .* pass float32 inputs, e.g. images as x.astype\('float32'\) / 255"):
        mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.HawqPlanner())


def test_the_proxy_scores_as_many_search_samples_as_asked(task):
    model, data = task
    result = mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", finetune_steps=0,
                         planner=mc.agents.HawqPlanner(), proxy_samples=40, calibration_samples=16)
    for key in ("search_accuracy_original", "search_accuracy_compressed"):
        assert result.summary[key] * 40 == pytest.approx(round(result.summary[key] * 40))  # steps of 1/40
    assert len(data.search.x) > 40


@pytest.mark.parametrize("samples, message", [(dict(proxy_samples=19), "proxy_samples must be at least 20"),
                                              (dict(calibration_samples=0), "calibration_samples at least 1")])
def test_too_few_proxy_or_calibration_samples_are_refused_before_any_work(task, samples, message):
    model, data = task
    with pytest.raises(mc.errors.MetacompressError, match=message):
        mc.compress(model, data.train.x[:8], data, hardware="m7-mcu", budget="size=0.5", planner=mc.agents.HawqPlanner(), **samples)

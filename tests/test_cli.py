"""The user's jobs end to end through the CLI: apply (zoo model and user file), inspect, errors."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from metacompress import Plan, compress
from metacompress.agents.policy_io import PolicyMetadata, build_policy, save_policy
from metacompress.cli import main
from metacompress.report import read_decisions


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    torch.manual_seed(0)
    metadata = PolicyMetadata(algo="ppo", net_arch=(16,))
    return save_policy(build_policy(metadata), metadata, tmp_path_factory.mktemp("p") / "policy")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


USER_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn
    from metacompress import splits_from_arrays

    def factory():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
        x = torch.randn(600, 12)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        optimizer = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(200):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return model.eval(), splits_from_arrays(x, y, seed=0)
    """
)


def test_apply_on_a_user_file_model_then_inspect(cache, policy, capsys):
    (cache / "mymodel.py").write_text(USER_MODEL)
    code = main(["apply", "--model", "mymodel.py:factory", "--hardware", "m7-mcu", "--budget", "size=0.3",
                 "--policy", str(policy), "--finetune-steps", "5", "--threads", "2", "--out", "runs/a"])
    assert code == 0
    progress = capsys.readouterr().err  # the stages, with their elapsed time
    assert "analysed mymodel: 3 layers in 3 units" in progress and "probed; planning with" in progress
    run = cache / "runs" / "a"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["within_budget"] and summary["budget_ratio"] <= 1
    decisions = read_decisions(run / "decisions.csv")
    assert list(decisions["name"]) == ["1", "3", "5"] and decisions["frozen"].tolist() == [False, False, True]
    assert decisions["note"].isna().tolist() == [True, True, False]  # only the head has a reason to keep its channels
    assert "- unit 2 `5`: its output is the model output (classifier head)" in (run / "report.md").read_text()
    assert Plan.from_json(run / "plan.json").kept == tuple(decisions["kept"])
    for name in ("report.md", "config.json", "decisions.json", "model/model.json", "model/weights.safetensors"):
        assert (run / name).exists(), name
    capsys.readouterr()
    assert main(["inspect", str(run), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "1"
    assert main(["inspect", str(run), "--plot", str(cache / "d.png")]) == 0
    assert (cache / "d.png").stat().st_size > 10_000


def test_apply_on_a_zoo_model_and_refusals(cache, policy, capsys):
    args = ["apply", "--model", "mlp-w64-d1-digits", "--hardware", "bismo-edge", "--budget", "bitops=0.1",
            "--policy", str(policy), "--finetune-epochs", "0.5", "--out", "runs/z"]
    assert main(["--quiet"] + args) == 0
    assert "analysed" not in capsys.readouterr().err
    summary = json.loads((cache / "runs" / "z" / "summary.json").read_text())
    assert summary["within_budget"] and summary["finetune_steps"] == 4  # half of digits' 897 train samples, batch 128
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args[:-2] + ["--budget", "bitops=0.001", "--out", "runs/y"]) == 2
    assert "the most compressed plan" in capsys.readouterr().err
    assert main(args[:-2] + ["--budget", "bitops=0.001", "--max-prune", "0.5", "--out", "runs/y"]) == 2
    assert "the most compressed plan (prune 0.5, " in capsys.readouterr().err  # --max-prune reaches the projector
    assert main(args[:-2] + ["--budget", "speed=0.5", "--out", "runs/x"]) == 2
    assert "budget kind 'speed' is unknown" in capsys.readouterr().err
    assert main(args[:-2] + ["--policy", str(cache), "--out", "runs/w"]) == 2
    assert "not a saved policy" in capsys.readouterr().err
    baseline = ["apply", "--model", "mlp-w64-d1-digits", "--hardware", "bismo-edge", "--budget", "bitops=0.1", "--finetune-steps", "1"]
    assert main(baseline + ["--method", "hawq", "--out", "runs/h"]) == 0
    summary = json.loads((cache / "runs" / "h" / "summary.json").read_text())
    assert summary["planner"] == "hawq" and summary["within_budget"] and summary["evaluations_used"] <= 1
    assert "analysed" in capsys.readouterr().err
    assert main(baseline + ["--method", "hawq", "--out", "runs/q", "--quiet"]) == 0  # after the command, as users type it
    assert "analysed" not in capsys.readouterr().err
    assert main(baseline + ["--method", "zero-shot", "--out", "runs/v"]) == 2
    assert "use --policy DIR and --few-shot N" in capsys.readouterr().err


def test_compress_is_reproducible_and_never_mutates_the_model(cache, policy):
    namespace: dict = {}
    exec(USER_MODEL, namespace)
    model, data = namespace["factory"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(hardware="bismo-edge", budget="bitops=0.2", policy=policy, few_shot=3, finetune_steps=3, seed=4)
    first = compress(model, data.train.x[:8], data, **kwargs)
    second = compress(model, data.train.x[:8], data, **kwargs)
    assert first.plan == second.plan and first.summary["within_budget"]
    assert first.planning.evaluations_used <= 3
    shipped = compress(model, data.train.x[:8], data, **{**kwargs, "policy": "rl2", "finetune_steps": 0})
    assert shipped.summary["planner"] == "few-shot-rl2" and shipped.summary["within_budget"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(Exception, match="samples have shape"):
        compress(model, torch.zeros(2, 5), data, **kwargs)

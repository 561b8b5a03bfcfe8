"""Fake quantization levels, calibration, and the KD fine-tune."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metacompress import Plan
from metacompress.compressors import SearchModel, build_graph, calibrate, distill
from metacompress.compressors.quant import ActivationQuantizer, attach_activation_quantizers, quantize_weight, weight_scales
from tiny_models import TinyMLP, TinyResNet, TwoHeads, example_input, trained_like


def test_weight_quantization_levels_per_channel():
    weight = torch.randn(6, 10)
    weight[2] = 0  # a masked row must not produce NaN
    for bits in (2, 3, 4, 8):
        q = quantize_weight(weight, bits)
        assert torch.isfinite(q).all() and torch.equal(q[2], torch.zeros(10))
        for row in q:
            assert row.unique().numel() <= 2**bits - 1  # narrow-range symmetric


def test_mse_clipping_beats_min_max_at_low_bits():
    weight = torch.randn(32, 256)
    weight[:, 0] *= 8  # one outlier per row
    qmax = 2 ** (3 - 1) - 1
    min_max = weight.abs().amax(dim=1) / qmax
    err_mse = (quantize_weight(weight, 3) - weight).pow(2).sum()
    err_minmax = (quantize_weight(weight, 3, min_max) - weight).pow(2).sum()
    assert err_mse < 0.8 * err_minmax
    assert (weight_scales(weight, 3) <= min_max + 1e-9).all()


def test_activation_quantizer_uses_its_bits_and_ignores_zero_channels():
    q = ActivationQuantizer()
    x = torch.rand(64, 8) * 4
    q.start_observing()
    q(torch.cat([x, torch.zeros(64, 8)], dim=1))  # masked channels are exact zeros
    q.finish_observing(3)
    scale_with_zeros = float(q.scale)
    q.start_observing()
    q(x)
    q.finish_observing(3)
    assert float(q.scale) == scale_with_zeros
    assert q(x).unique().numel() <= 8


def test_batchnorm_recalibration_matches_the_calibration_statistics():
    model = trained_like(TinyResNet())
    x = example_input(model, batch=64)
    quantizers = attach_activation_quantizers(model, ["stem.0"])
    calibrate(model, quantizers, {"stem.0": 8}, [x])
    features = model.stem[0](x)
    assert torch.allclose(model.stem[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-2)


def test_inputs_past_what_a_quantizer_keeps_are_counted_in_a_second_pass_to_the_same_ranges(monkeypatch):
    from metacompress.compressors import quant

    def ranges() -> dict[str, tuple[float, int]]:
        torch.manual_seed(0)
        model = trained_like(TinyResNet())
        quantizers = attach_activation_quantizers(model, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)])
        batches = [example_input(model, batch=16, seed=seed) for seed in range(3)]
        calibrate(model, quantizers, dict.fromkeys(quantizers, 3), batches)
        return {name: (float(q.scale), int(q.zero_point)) for name, q in quantizers.items()}

    kept = ranges()
    monkeypatch.setattr(quant, "KEPT_VALUES", 500)  # every layer's inputs pass it within the first batch
    passes = []
    monkeypatch.setattr(ActivationQuantizer, "end_observing", lambda self, end=ActivationQuantizer.end_observing: passes.append(end(self)) or passes[-1])
    assert ranges() == kept
    assert passes and all(passes)  # every quantizer counted in the second pass


def kl_to_teacher(student, teacher, x):
    return F.kl_div(F.log_softmax(student(x), -1), F.log_softmax(teacher(x), -1), log_target=True, reduction="batchmean").item()


def test_search_mode_finetune_recovers_and_keeps_masks():
    teacher = trained_like(TinyResNet())
    x = example_input(teacher, batch=256, seed=1)
    graph = build_graph(teacher, x[:32])
    plan = Plan.uniform(graph.spec, prune=0.5, w_bits=3, a_bits=4)
    search = SearchModel(teacher, graph, [x[:64]])
    before = kl_to_teacher(search.apply(plan), teacher, x)
    tuned = search.finetune(plan, teacher, x, steps=60, lr=3e-3)
    after = kl_to_teacher(tuned, teacher, x)
    assert after < 0.7 * before
    removed = graph.units[0].removed_channels(graph.spec.units[0], plan.kept[0])
    assert torch.equal(tuned.stem[0].weight[removed], torch.zeros_like(tuned.stem[0].weight[removed]))
    assert torch.equal(tuned.stem[1].bias[removed], torch.zeros(len(removed)))


def test_distill_with_zero_steps_changes_nothing():
    teacher = trained_like(TinyMLP())
    student = trained_like(TinyMLP(), seed=3)
    state = {k: v.clone() for k, v in student.state_dict().items()}
    distill(student, teacher, example_input(teacher), {"fc1": 4}, steps=0)
    assert all(torch.equal(state[k], v) for k, v in student.state_dict().items())


def test_distill_pulls_every_output_not_only_the_scored_first_one():
    torch.manual_seed(0)
    teacher = TwoHeads()
    student = TwoHeads()
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        student.score.weight.add_(torch.randn_like(student.score.weight))  # the first output still matches exactly
    x = torch.randn(256, 8)
    gap = lambda: float((student(x)[1] - teacher(x)[1]).abs().mean())  # noqa: E731
    before = gap()
    distill(student, teacher, x, {}, steps=60, lr=1e-2, loss="regression")
    assert gap() < 0.5 * before

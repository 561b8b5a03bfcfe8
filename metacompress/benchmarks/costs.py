"""What a ``bench agents`` run costs: a measured table per held-out model, for ``--dry-run`` and presets.

``MEASURED`` holds, per zoo model (all 42), the CPU seconds of one proxy
evaluation (the world's default recovery) and of one final KD step (batch 128), on one
thread of the 2-core dev box (process time, so other jobs on the box do not inflate it;
wall time on a busy box is up to 3x more). It orders tasks cheapest first and estimates
a run as ``evaluations x evaluation + steps x step + the planner's own overhead``. It
is an estimate: re-measure it (``bench agents --preset quick``'s results hold the real
seconds) when the evaluator or the models change.
"""

from __future__ import annotations

import statistics

from metacompress.agents.registry import Method

# zoo model id -> (s per proxy evaluation incl. the env episode, s per final KD step incl. export and the
# test split / 100); 10 random plans and one 100-step fine-tune each, 2026-11-28, proxy = calibration only
MEASURED: dict[str, tuple[float, float]] = {
    "cnn1d-w16-d2-mnist1d": (0.0141, 0.0043),
    "cnn1d-w32-d3-mnist1d": (0.0342, 0.0075),
    "cnn1d-w32-d4-mnist1d": (0.0295, 0.0060),
    "cnn1d-w64-d3-mnist1d": (0.0564, 0.0132),
    "mlp-w128-d1-mnist": (0.0046, 0.0021),
    "mlp-w128-d2-digits": (0.0051, 0.0118),
    "mlp-w128-d2-mnist1d": (0.0065, 0.0017),
    "mlp-w256-d2-mnist": (0.0122, 0.0047),
    "mlp-w256-d2-shapes": (0.0320, 0.0055),
    "mlp-w256-d3-mnist1d": (0.0197, 0.0058),
    "mlp-w64-d1-digits": (0.0022, 0.0012),
    "mobilenetv2-w16-d1-digits": (0.0948, 0.0301),
    "mobilenetv2-w16-d1-mnist": (0.4147, 0.0667),
    "mobilenetv2-w16-d1-shapes": (1.1458, 0.1093),
    "mobilenetv2-w16-d2-mnist": (0.7879, 0.1432),
    "mobilenetv2-w16-d2-shapes": (1.6081, 0.1549),
    "mobilenetv2-w24-d1-shapes": (1.4015, 0.1384),
    "mobilenetv2-w8-d1-digits": (0.0516, 0.0197),
    "mobilenetv2-w8-d1-mnist": (0.2804, 0.0261),
    "resnet-w16-d1-digits": (0.0421, 0.0198),
    "resnet-w16-d1-mnist": (0.1608, 0.0361),
    "resnet-w16-d1-shapes": (0.4561, 0.0548),
    "resnet-w16-d2-mnist": (0.2721, 0.0593),
    "resnet-w16-d2-shapes": (0.5540, 0.0504),
    "resnet-w32-d1-shapes": (1.2497, 0.1203),
    "resnet-w8-d1-digits": (0.0268, 0.0142),
    "resnet-w8-d1-mnist": (0.0863, 0.0252),
    "transformer-w32-d1-digits": (0.0245, 0.0100),
    "transformer-w32-d2-digits": (0.0455, 0.0162),
    "transformer-w32-d2-mnist": (0.2471, 0.0672),
    "transformer-w32-d2-mnist1d": (0.1483, 0.0240),
    "transformer-w32-d2-shapes": (0.1212, 0.0191),
    "transformer-w64-d2-mnist": (0.4914, 0.1083),
    "transformer-w64-d2-shapes": (0.2516, 0.0299),
    "vgg-w16-d1-digits": (0.0155, 0.0074),
    "vgg-w16-d1-mnist": (0.0561, 0.0140),
    "vgg-w16-d1-shapes": (0.1201, 0.0214),
    "vgg-w16-d2-mnist": (0.1473, 0.0301),
    "vgg-w16-d2-shapes": (0.2908, 0.0384),
    "vgg-w32-d1-shapes": (0.2353, 0.0341),
    "vgg-w8-d1-digits": (0.0116, 0.0055),
    "vgg-w8-d1-mnist": (0.0248, 0.0080),
}
_FALLBACK = (statistics.median(v[0] for v in MEASURED.values()), statistics.median(v[1] for v in MEASURED.values()))

UNIFORM_CANDIDATES = 8  # undominated uniform settings the uniform planner typically scores (1 to ~25 seen)
DDPG_SECONDS_PER_EPISODE = 0.01  # SB3 DDPG updates (300-300 networks) besides the episode's evaluation
HAWQ_SECONDS = 1.0  # the ILP rounds besides its one evaluation


def evaluation_seconds(model: str) -> float:
    """Seconds of one proxy evaluation of ``model`` (the table's median for an unmeasured model)."""
    return MEASURED.get(model, _FALLBACK)[0]


def expected_evaluations(method: Method) -> float:
    """Proxy evaluations a run of ``method`` performs on a cold cache, at most (zero-shot's plan is scored for the report)."""
    if method.kind == "zero-shot":
        return 1.0
    if method.kind == "uniform":
        return float(min(method.evaluations, UNIFORM_CANDIDATES))
    return float(method.evaluations)


def estimated_run_seconds(model: str, method: Method, finetune_steps: int) -> float:
    """Estimated seconds of one (task, method, seed) run: planning plus the final fine-tune.

    Planners that run out of distinct plans (evolution on few units, DDPG repeating
    itself) score fewer plans than their budget, so this errs long.
    """
    evaluation, step = MEASURED.get(model, _FALLBACK)
    solves_ilp = method.kind in ("hawq", "hawq-relation", "hawq-proto")  # the ILP on HAWQ's or a predictor's scores
    extra = HAWQ_SECONDS if solves_ilp else DDPG_SECONDS_PER_EPISODE * method.evaluations if method.kind == "ddpg" else 0.0
    return expected_evaluations(method) * evaluation + finetune_steps * step + extra

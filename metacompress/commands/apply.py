"""``metacompress apply``: compress a model with a policy and write a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from metacompress.commands.executor_flags import add_executor_flags, check_executor_flags, executor_from
from metacompress.compressors.budget import DEFAULT_MAX_PRUNE
from metacompress.envs.evaluator import CALIBRATION_SAMPLES, PROXY_SAMPLES

DEFAULT_MODEL = "mobilenetv2-w8-d1-digits"  # a held-out family: the agent never trained on it
DEFAULT_HARDWARE = "bitfusion-edge"  # a held-out archetype
DEFAULT_BUDGET = "bitops=0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "apply",
        help="compress a model for a hardware under a budget with a learned policy",
        epilog="example: metacompress apply --model mobilenetv2-w8-d1-digits --hardware bitfusion-edge --budget bitops=0.1 --seed 0",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo id or path/to/file.py:factory (default {DEFAULT_MODEL})")
    parser.add_argument("--weights", default=None, help="safetensors state dict for a file.py:factory model")
    parser.add_argument("--hardware", default=DEFAULT_HARDWARE,
                        help=f"preset (see `metacompress hardware list`), sample:<archetype>:<seed>, or a LUT CSV (default {DEFAULT_HARDWARE})")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help=f"KIND=FRACTION of the unpruned W8A8 cost; KIND is latency, energy, size or bitops (default {DEFAULT_BUDGET})")
    parser.add_argument("--policy", default=None, help="policy folder, or a shipped one: default (residual), ppo, rl2, or a meta-learner (reptile, maml, meta-sgd, "
                             "meta-curvature, where shipped; they adapt with --few-shot N) (default: default)")
    parser.add_argument("--few-shot", type=int, default=0, help="proxy evaluations to adapt with (default 0: zero-shot); a residual policy (the shipped "
                             "one) re-solves the integer program under score corrections fitted to them (few-shot-resolve) and, "
                             "from 12 up, keeps the last sixth, at most 5, to re-score its best plans with a 30-step KD proxy")
    parser.add_argument("--method", default=None,
                        help="plan with a baseline instead of the policy: uniform, hawq, ddpg-N, random-N or evolution-N "
                             "(N proxy evaluations; DDPG: episodes), or hawq-relation / hawq-proto (the HAWQ ILP on a learned "
                             "predictor's scores; --policy then names its predictor folder, default the shipped one)")
    recovery = parser.add_mutually_exclusive_group()
    recovery.add_argument("--finetune-steps", type=int, default=300, help="KD fine-tune steps of the final recovery (default 300)")
    recovery.add_argument("--finetune-epochs", type=float, default=None,
                          help="the final recovery as passes over the train split instead (steps = epochs x samples / 128)")
    parser.add_argument("--frozen", nargs="*", default=[], help="module paths to keep unpruned at 8 bits")
    parser.add_argument("--max-prune", type=float, default=DEFAULT_MAX_PRUNE,
                        help=f"largest fraction of a unit's channels a plan may remove, in [0, 1) (default {DEFAULT_MAX_PRUNE})")
    parser.add_argument("--metric", default=None, type=_metric_source,
                        help="score plans with fn(outputs, targets) -> float (higher is better) instead of top-1 accuracy: "
                             "module:fn or path/to/file.py:fn")
    parser.add_argument("--output-kind", default=None, choices=("logits", "probabilities", "regression"),
                        help="what the model outputs; picks the recovery's distillation loss (logits: KL; else MSE) "
                             "(default: detected where unambiguous, else logits)")
    parser.add_argument("--max-drop", default=None, type=_max_drop,
                        help="accuracy-target mode: the cheapest plan of --budget's kind whose recovered metric drops at most "
                             "this much: points (1.0 = one percentage point of accuracy) or relative (1%%); --budget's fraction is ignored")
    parser.add_argument("--proxy-samples", type=_proxy_samples, default=PROXY_SAMPLES,
                        help=f"search-split samples each proxy evaluation scores (default {PROXY_SAMPLES}; at least 20); "
                             "with --calibration-samples it sets the time of every probe and evaluation on a large model")
    parser.add_argument("--calibration-samples", type=_positive, default=CALIBRATION_SAMPLES,
                        help=f"train-split samples each evaluation calibrates BatchNorm and activation ranges on (default {CALIBRATION_SAMPLES})")
    parser.add_argument("--device", default="cpu", type=_device,
                        help="where probes, evaluations and recovery run: cpu, cuda or auto (default cpu); "
                             "budgets are priced from the structure, never on the device")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0); same seed, same plan")
    parser.add_argument("--threads", type=_positive, default=1,
                        help="torch CPU threads in this process (default 1: the same plan on any machine; on a large model "
                             "pass your core count, plans then match runs with the same count)")
    parser.add_argument("--out", default=None, help="run folder (default runs/apply-<model>-s<seed>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing apply run (never a folder that is not one)")
    add_executor_flags(parser, "workers scoring --few-shot batches (default 1; the search baselines batch, see README)")
    parser.set_defaults(handler=_apply)


def _metric_source(text: str) -> str:
    """``--metric``'s form, checked at parse time (the import happens before the model is built)."""
    module, sep, name = text.rpartition(":")
    if not sep or not module or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not module:function or path/to/file.py:function")
    return text


def _positive(text: str) -> int:
    """A whole number >= 1, checked at parse time."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _proxy_samples(text: str) -> int:
    """At least as many as the search split must hold (its accuracy steps in 1/N), checked at parse time."""
    from metacompress.data import MIN_SPLIT_SAMPLES

    value = _positive(text)
    if value < MIN_SPLIT_SAMPLES["search"]:
        raise argparse.ArgumentTypeError(f"{text!r} is fewer than {MIN_SPLIT_SAMPLES['search']}: the proxy's accuracy would step in "
                                         f"1/{value}; pass at least {MIN_SPLIT_SAMPLES['search']}")
    return value


def _max_drop(text: str):
    from metacompress.accuracy_target import MaxDrop
    from metacompress.errors import MetacompressError

    try:
        return MaxDrop.parse(text)
    except MetacompressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _device(text: str) -> str:
    from metacompress.devices import DEVICES

    if text not in DEVICES and not text.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use one of {', '.join(DEVICES)}")
    return text


def _baseline(args: argparse.Namespace):
    """The ``--method`` planner and its evaluation budget; the learned modes stay with --policy/--few-shot."""
    from metacompress.agents.registry import PREDICTOR_WHICH, method_planner, parse_method
    from metacompress.errors import MetacompressError

    method = parse_method(args.method)
    if method.learned and method.policy not in PREDICTOR_WHICH:
        raise MetacompressError(f"--method {args.method} is a learned mode: use --policy DIR and --few-shot N instead")
    if args.few_shot or (args.policy and method.policy is None):
        raise MetacompressError(f"--method {args.method} replaces --policy/--few-shot (its evaluations are in its name); drop them")
    return method_planner(method, args.policy), method.evaluations


def _apply(args: argparse.Namespace) -> int:
    import torch

    from metacompress.api import compress
    from metacompress.compressors.recovery import steps_for_epochs
    from metacompress.compressors.runs import RunFolder
    from metacompress.data import as_splits
    from metacompress.devices import resolve_device
    from metacompress.sources import load_function, load_model_source

    torch.set_num_threads(args.threads)
    name = Path(args.model.split(":")[0]).stem if ".py:" in args.model else args.model
    out = Path(args.out or f"runs/apply-{name}-s{args.seed}")
    RunFolder(out, "apply", args.overwrite).check()  # before the model is built or anything computed
    resolve_device(args.device)  # cuda asked for but missing: say so before any work
    metric = load_function(args.metric) if args.metric else None
    check_executor_flags(args)
    executor = executor_from(args)  # an unreachable --ray-address fails here, before the model is built
    model, data, builder = load_model_source(args.model, args.weights)
    data = as_splits(data)  # a factory may return DataLoaders or Datasets
    epochs = args.finetune_epochs
    finetune_steps = args.finetune_steps if epochs is None else steps_for_epochs(epochs, len(data.train.x))
    planner, few_shot = _baseline(args) if args.method else (None, args.few_shot)
    try:
        result = compress(
            model, data.train.x[:8], data, hardware=args.hardware, budget=args.budget, policy=args.policy, planner=planner,
            few_shot=few_shot, finetune_steps=finetune_steps, seed=args.seed, frozen=tuple(args.frozen), max_prune=args.max_prune,
            name=name, metric=metric, output_kind=args.output_kind, max_drop=args.max_drop, device=args.device, executor=executor,
            proxy_samples=args.proxy_samples, calibration_samples=args.calibration_samples,
        )
    finally:
        executor.close()
    config = {key: str(value) if key == "max_drop" and value is not None else value for key, value in vars(args).items() if key != "handler"}
    result.save(out, config=config, builder=builder, overwrite=args.overwrite)
    s = result.summary
    print(f"{name} on {s['hardware']} under {s['budget']} ({s['planner']}, {s['evaluations_used']} evaluations)")
    print(f"  cost {s['cost_ratio']:.4f} of W8A8 = {s['budget_ratio']:.3f} of budget; size {s['size_bits'] / 8192:.1f} KiB "
          f"(W8A8 {s['reference_size_bits'] / 8192:.1f} KiB)")
    print(f"  proxy {s['metric']} {s['search_accuracy_original']:.4f} -> {s['search_accuracy_compressed']:.4f} (search split)")
    print(f"  test {s['metric']}  {s['test_accuracy_original']:.4f} -> {s['test_accuracy_compressed']:.4f} "
          f"after {s['finetune_steps']} KD steps ({s['test_change']:+.4f})")
    if "tradeoff" in s:
        from metacompress.report import tradeoff_lines

        print("\n".join(tradeoff_lines(s)))
    print(f"  {s['total_seconds']:.1f} s; wrote {out}/ (report.md, decisions.csv, plan.json, model/)")
    print(f"next: metacompress inspect {out} --plot {out}/decisions.png")
    return 0

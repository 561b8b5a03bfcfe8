"""``metacompress bench ...``: benchmarks whose output the README and closing notes quote."""

from __future__ import annotations

import argparse
import json

from metacompress.commands.executor_flags import add_executor_flags, check_executor_flags, executor_from


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark (core speed, env speed, policy quality)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    core = kinds.add_parser(
        "core",
        help="latency of a 50%%-channel export vs the original, and search-mode evaluation cost",
        epilog="example: metacompress bench core --seed 0",
    )
    core.add_argument("--seed", type=int, default=0, help="seed of the model weights and data (default 0)")
    core.add_argument("--width", type=int, default=32, help="ResNet stage-1 channels (default 32)")
    core.add_argument("--batch", type=int, default=64, help="batch size for latency (default 64)")
    core.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, steadiest numbers)")
    core.add_argument("--repeats", type=int, default=7, help="timed repeats; the median is reported (default 7)")
    core.add_argument("--json", action="store_true", help="print the result as JSON")
    core.set_defaults(handler=_core)

    env = kinds.add_parser(
        "env",
        help="episodes per second and the env's own overhead share on reference tasks",
        epilog="example: metacompress bench env --episodes 40 --seed 0",
    )
    env.add_argument("--episodes", type=int, default=40, help="random-action episodes per task (default 40)")
    env.add_argument("--seed", type=int, default=0, help="action seed (default 0)")
    env.add_argument("--search-finetune-steps", type=int, default=None, help="KD steps per evaluation (default: the env default)")
    env.set_defaults(handler=_env)

    fidelity = kinds.add_parser(
        "fidelity",
        help="Spearman correlation of the proxy with the final fine-tuned test accuracy, per recovery setting",
        epilog="example: metacompress bench fidelity --plans 50 --seed 0",
    )
    fidelity.add_argument("--plans", type=int, default=20, help="random plans per model (default 20: 60 over the three models)")
    fidelity.add_argument("--final-steps", type=int, default=200, help="KD steps of the final fine-tune (default 200)")
    fidelity.add_argument("--seed", type=int, default=0, help="seed of the random plans (default 0)")
    fidelity.add_argument("--near-solver", action="store_true",
                          help="plans around the solver's plan (where planners compete) instead of random plans; adds the "
                               "correlation among the plans within 5 points of the best")
    add_executor_flags(fidelity)
    fidelity.set_defaults(handler=_fidelity)

    deploy = kinds.add_parser(
        "deploy",
        help="onnxruntime latency (1 thread, all threads) and accuracy of fp32, int8, pruned fp32 and the pruned mixed plan",
        epilog="example: metacompress bench deploy --seed 0",
    )
    deploy.add_argument("--models", default=None, help="comma list of zoo ids (default: vgg-w16-d2-mnist, mlp-w256-d2-mnist, mobilenetv2-w8-d1-digits)")
    deploy.add_argument("--hardware", default="bismo-edge", help="target the mixed plan is made for (default bismo-edge: 2-8-bit kernels)")
    deploy.add_argument("--budget", default="bitops=0.25", help="budget of the mixed plan (default bitops=0.25)")
    deploy.add_argument("--cpu-preset", default="cortex-a76-int8", help="roofline CPU preset whose prediction is shown (default cortex-a76-int8)")
    deploy.add_argument("--finetune-steps", type=int, default=200, help="KD steps of the compressed model's recovery (default 200)")
    deploy.add_argument("--repeats", type=int, default=21, help="timed repeats; the median is reported (default 21)")
    deploy.add_argument("--seed", type=int, default=0, help="seed of the plan and the recovery (default 0)")
    deploy.add_argument("--json", action="store_true", help="print the rows as JSON")
    deploy.set_defaults(handler=_deploy)

    reliability = kinds.add_parser(
        "reliability",
        help="replay bad inputs and Ctrl-C through the CLI (exit status, message, files lost or left) and the budget property",
        epilog="example: metacompress bench reliability --tasks 1000 --seed 0",
    )
    reliability.add_argument("--tasks", type=int, default=1000, help="random tasks for the budget property (default 1000)")
    reliability.add_argument("--seed", type=int, default=0, help="seed of the random tasks (default 0)")
    reliability.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    reliability.set_defaults(handler=_reliability)

    scaling = kinds.add_parser(
        "executor",
        help="evaluations per second and per-evaluation overhead of each executor backend (1 and 2 workers), and the "
             "projection to N workers",
        epilog="example: metacompress bench executor --plans 24 --search-finetune-steps 10 --seed 0",
    )
    scaling.add_argument("--model", default=None, help="zoo model whose plans are scored (default mlp-w64-d1-digits)")
    scaling.add_argument("--plans", type=int, default=24, help="timed plans per setting (default 24)")
    scaling.add_argument("--search-finetune-steps", type=int, default=0,
                         help="KD steps in each proxy evaluation, to make one evaluation cost what yours does (default 0)")
    scaling.add_argument("--backends", default="inprocess,process,ray", help="comma list (default inprocess,process,ray)")
    scaling.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT", help="measure Ray on this cluster (default: a local one)")
    scaling.add_argument("--seed", type=int, default=0, help="seed of the random plans (default 0)")
    scaling.set_defaults(handler=_scaling)

    agents = kinds.add_parser(
        "agents",
        help="learned agent (zero-/few-shot) vs baselines on held-out tasks: CSV, summary.md with CIs and win-rates, plot",
        description="Runs every (task, method, seed); see metacompress.benchmarks.compare for exactly what each preset runs.",
        epilog="example: metacompress bench agents --preset quick --policy runs/train-quick-ppo-s0/policy --seeds 0",
    )
    agents.add_argument("--preset", choices=["quick", "full"], default="quick",
                        help="quick: 6 held-out tasks, <= 10 min; full: all held-out tasks x 3 seeds, <= 2 h on 2 cores (default quick)")
    agents.add_argument("--split", choices=["heldout", "validation", "train"], default="heldout",
                        help="suite split (default heldout, for reports; validation: for design choices, never trained on: "
                             "the train split's vgg tasks, 32 tight-budget vgg tasks, 24 vgg tasks on unseen hardware "
                             "instances and 24 tasks on 12 generated networks of a region training never draws, built "
                             "on first use; train only to debug)")
    agents.add_argument("--methods", default=None,
                        help="comma list, e.g. zero-shot,hawq,random-300 (default: the preset's; <kind>-<N> sets N evaluations)")
    agents.add_argument("--seeds", "--seed", default=None, help="comma list of seeds, e.g. 0,1,2 (default: quick 0, full 0,1,2)")
    agents.add_argument("--policy", default=None, help="PPO policy folder for zero-shot and few-shot-sample (default: the shipped policy, if any)")
    agents.add_argument("--rl2-policy", default=None, help="recurrent policy folder for few-shot-rl2 (default: the shipped one)")
    agents.add_argument("--reptile-policy", default=None, help="Reptile policy folder for few-shot-reptile (default: the shipped one)")
    for variant in ("maml", "meta-sgd", "meta-curvature"):
        agents.add_argument(f"--{variant}-policy", default=None,
                            help=f"`train --algo {variant}` policy folder for few-shot-{variant} (default: the shipped one, if any)")
    for which, method in (("relation", "hawq-relation"), ("prototypical", "hawq-proto")):
        agents.add_argument(f"--{which}-policy", default=None,  # registry.POLICY_FLAGS; _agents reads them through it
                            help=f"`train --algo {which}` predictor folder for {method} (default: the shipped one)")
    agents.add_argument("--finetune-steps", type=int, default=None, help="KD steps of the final fine-tune of every plan (default 100)")
    agents.add_argument("--tasks", type=int, default=None, help="run only the first N tasks of the ordering (cheapest first per novelty)")
    add_executor_flags(agents, "workers (default: full 2, quick 1; more than 1 means a process pool unless --executor)")
    agents.add_argument("--no-limits", action="store_true", help="ignore the preset's per-method task/seed limits (much longer)")
    agents.add_argument("--out", default=None, help="run folder (default runs/bench-<preset>-s<seeds>)")
    agents.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    agents.add_argument("--dry-run", action="store_true", help="list the runs and the estimated time, run nothing")
    agents.set_defaults(handler=_agents)

    _register_scale(kinds)

    predictors = kinds.add_parser(
        "predictors",
        help="prototypical and relation predictors of unit option tables vs HAWQ's scores on the validation units "
             "(Spearman, MAE), and the solver planning on each",
        description="Trains on the train split's training families, scores on its validation family (vgg); never reads "
                    "the held-out split. Option tables are measured once and cached next to the zoo.",
        epilog="example: metacompress bench predictors --seed 0",
    )
    predictors.add_argument("--seed", type=int, default=0, help="seed of the predictors' networks (default 0)")
    predictors.add_argument("--train-models", type=int, default=8,
                            help="training-family models, cheapest first, families in turn (default 8)")
    predictors.add_argument("--validation-models", type=int, default=3, help="validation-family (vgg) models, cheapest first (default 3)")
    predictors.add_argument("--plan-tasks", type=int, default=8,
                            help="validation tasks the solver plans on each method's scores; 0 skips planning (default 8)")
    predictors.add_argument("--steps", type=int, default=300, help="Adam steps of each predictor's episodic training (default 300)")
    predictors.set_defaults(handler=_predictors)


def _register_scale(kinds: argparse._SubParsersAction) -> None:
    """``bench scale`` (issue 14 item 6): stage times as the model grows; see ``metacompress.benchmarks.scale``."""
    scale = kinds.add_parser(
        "scale",
        help="analyze, probe, one-evaluation and planning seconds for CNNs of 0.1M, 1M and 11M parameters, and probe evaluations per unit",
        epilog="example: metacompress bench scale --sizes 0.1M,1M --resolutions 16,32 --samples 16 --device cpu",
    )
    scale.add_argument("--sizes", default="0.1M,1M,11M", help="comma list of model sizes: 0.1M, 1M, 11M (default all three)")
    scale.add_argument("--resolutions", default="16,32", help="comma list of input sides in pixels (default 16,32)")
    scale.add_argument("--samples", type=int, default=16, help="samples per split: calibration, Hessian batch, proxy (default 16; time is linear in it)")
    scale.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    scale.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    scale.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default 0)")
    scale.add_argument("--json", action="store_true", help="print the rows as JSON")
    scale.set_defaults(handler=_scale)


def _predictors(args: argparse.Namespace) -> int:
    import torch

    from metacompress.benchmarks.predictors import run_predictors

    torch.set_num_threads(1)
    report = run_predictors(seed=args.seed, train_models=args.train_models, validation_models=args.validation_models,
                            plan_tasks=args.plan_tasks, steps=args.steps)
    print(f"train: {report.train_units} units of {', '.join(report.train_models)}")
    print(f"validation: {', '.join(report.validation_models)}")
    print("option tables vs measured (validation units; the 4 probed options left out; HAWQ's loss-unit scores get one "
          "least-squares scale per model for the MAE):")
    print(f"{'method':<38} {'units':>5} {'options':>7} {'spearman':>8} {'MAE pts':>8}")
    for row in report.scores:
        print(f"{row.method:<38} {row.units:>5} {row.options:>7} {row.spearman:8.3f} {row.mae_points:8.2f}")
    if report.plans:
        print(f"the solver on each method's scores ({report.plans[0].tasks} validation tasks, proxy change, 1 evaluation each):")
        print(f"{'planner':<38} {'proxy pts':>9} {'vs hawq':>8} {'budget met':>10}")
        for row in report.plans:
            print(f"{row.method:<38} {row.proxy_change_points:9.2f} {row.vs_hawq_points:+8.2f} {row.budget_met:10.0%}")
    print(f"{report.seconds:.1f} s")
    return 0


def _scale(args: argparse.Namespace) -> int:
    import torch

    from metacompress.benchmarks.scale import ScaleConfig, run_scale_bench

    torch.set_num_threads(args.threads)
    try:
        sides = tuple(int(part) for part in args.resolutions.split(",") if part.strip())
    except ValueError:
        from metacompress.errors import MetacompressError

        raise MetacompressError(f"--resolutions {args.resolutions!r} is not a comma list of integers; write e.g. 16,32") from None
    config = ScaleConfig(sizes=tuple(s.strip() for s in args.sizes.split(",")), resolutions=sides, samples=args.samples,
                         device=args.device, seed=args.seed)
    rows = run_scale_bench(config)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    print(f"ResNet CNNs, {config.samples} samples per split, device {config.device}, {args.threads} thread(s); seconds")
    print(f"{'size':>5} {'res':>4} {'params':>11} {'units':>5} {'analyze':>8} {'probes':>8} {'evals/unit':>10} {'1 eval':>7} {'planning':>8}")
    for r in rows:
        print(f"{r.size:>5} {r.resolution:>4} {r.params:>11,} {r.units:>5} {r.analyze_s:8.2f} {r.probe_s:8.2f} "
              f"{r.evaluations_per_unit:10.2f} {r.evaluation_s:7.3f} {r.planning_s:8.2f}")
    return 0


def _core(args: argparse.Namespace) -> int:
    from metacompress.benchmarks.core import CoreBenchConfig, run_core_bench

    config = CoreBenchConfig(width=args.width, batch=args.batch, threads=args.threads, repeats=args.repeats, seed=args.seed)
    result = run_core_bench(config)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"ResNet-style CNN (width {config.width}, depth {config.depth}, 1x{config.image}x{config.image}), "
          f"{config.threads} thread(s), batch {config.batch}, median of {config.repeats}")
    print(f"  params                       {result.params_original:>10,} -> {result.params_pruned:,} at 50% channels")
    print(f"  latency original             {result.latency_original_ms:10.2f} ms")
    print(f"  latency exported, 50% chan.  {result.latency_pruned_ms:10.2f} ms   speedup {result.speedup:.2f}x (target >= 1.6x)")
    print(f"  same, fake quantizers on     {result.latency_pruned_simulated_ms:10.2f} ms   (simulation overhead, not deployment)")
    print(f"  forward, {config.search_samples} search samples  {result.forward_search_split_ms:10.1f} ms")
    print(f"  one search-mode evaluation   {result.search_evaluation_ms:10.1f} ms   = {result.evaluation_over_forward:.2f}x a forward pass (target <= 2x)")
    return 0


def _env(args: argparse.Namespace) -> int:
    import torch

    from metacompress.benchmarks.env import run_env_bench, summarize

    torch.set_num_threads(1)
    rows = run_env_bench(args.episodes, args.seed, args.search_finetune_steps)
    print(f"{'task':<58} {'units':>5} {'eps/s':>7} {'steps/s':>8} {'eval ms':>8} {'overhead':>9}")
    for r in rows:
        print(f"{r.task:<58} {r.units:>5} {r.episodes_per_second:7.2f} {r.steps_per_second:8.1f} {r.ms_per_evaluation:8.1f} {r.overhead_share:9.1%}")
    total = summarize(rows)
    print(f"mean: {total['episodes_per_second']:.2f} episodes/s per core, env overhead {total['overhead_share']:.1%} of episode time (target <= 25%)")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from metacompress.benchmarks.fidelity import FIDELITY_MODELS, run_fidelity

    torch.set_num_threads(1)
    check_executor_flags(args)
    executor = executor_from(args)
    bar = tqdm(total=args.plans * len(FIDELITY_MODELS), desc="final fine-tunes")
    try:
        rows = run_fidelity(plans_per_model=args.plans, final_steps=args.final_steps, seed=args.seed,
                            progress=lambda: bar.update(), near_solver=args.near_solver, executor=executor)
    finally:
        executor.close()
    bar.close()
    print(f"{'model':<24} {'plans':>5} {'KD steps in proxy':>17} {'spearman':>9} {'ms/eval':>8} {'final acc':>9} {'good':>5} {'spearman good':>13}")
    for r in rows:
        print(f"{r.model:<24} {r.plans:>5} {r.search_finetune_steps:>17} {r.spearman:9.3f} {r.ms_per_evaluation:8.1f} "
              f"{r.final_mean:9.3f} {r.good_plans:>5} {r.good_spearman:13.3f}")
    by_steps: dict[int, list[float]] = {}
    for r in rows:
        by_steps.setdefault(r.search_finetune_steps, []).append(r.spearman)
    print("mean spearman: " + ", ".join(f"{k} KD steps {sum(v) / len(v):.3f}" for k, v in by_steps.items()))
    return 0


def _scaling(args: argparse.Namespace) -> int:
    import torch

    from metacompress.benchmarks.scaling import DEFAULT_MODEL, PROJECTED_WORKERS, projection, run_scaling
    from metacompress.envs.executor import BACKENDS
    from metacompress.errors import BenchConfigError

    torch.set_num_threads(1)
    backends = tuple(b.strip() for b in args.backends.split(","))
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise BenchConfigError(f"--backends {','.join(unknown)} unknown; use a comma list of {', '.join(BACKENDS)}")
    per_eval, rows = run_scaling(args.model or DEFAULT_MODEL, args.plans, args.seed, backends,
                                 ray_address=args.ray_address, search_finetune_steps=args.search_finetune_steps)
    print(f"one evaluation in-process: {1e3 * per_eval:.1f} ms ({args.model or DEFAULT_MODEL}, "
          f"{args.search_finetune_steps} KD steps; every backend's scores equal in-process)")
    print(f"{'backend':<10} {'workers':>7} {'start s':>8} {'ship s':>7} {'evals/s':>8} {'overhead ms':>11} "
          f"{'dispatch ms':>11} {'speed-up':>8}")
    for r in rows:
        print(f"{r.backend:<10} {r.workers:>7} {r.start_s:8.2f} {r.ship_s:7.2f} {r.evals_per_s:8.1f} {r.overhead_ms:11.1f} "
              f"{r.dispatch_ms:11.2f} {r.speedup:7.2f}x")
    print("projection, evaluations/s = K / (t + overhead), capped at 1 / dispatch (K workers over any machines):")
    for r in rows:
        if r.backend != "inprocess" and r.workers == max(x.workers for x in rows if x.backend == r.backend):
            for t_ms in (1e3 * per_eval, 1000.0):
                cells = ", ".join(f"K={k}: {projection(t_ms / 1e3, r.overhead_ms, r.dispatch_ms, k):.1f}" for k in PROJECTED_WORKERS)
                print(f"  {r.backend:<8} t={t_ms:7.1f} ms  {cells}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import os

    import onnxruntime

    from metacompress.benchmarks.deploy import DEPLOY_MODELS, DeployBenchConfig, run_deploy_model
    from metacompress.compressors.hardware.measure_onnx import cpu_flags, cpu_name

    models = tuple(m.strip() for m in args.models.split(",")) if args.models else DEPLOY_MODELS
    config = DeployBenchConfig(models=models, hardware=args.hardware, budget=args.budget, cpu_preset=args.cpu_preset,
                               finetune_steps=args.finetune_steps, repeats=args.repeats, seed=args.seed)
    if args.json:
        print(json.dumps([r.as_dict() for model in models for r in run_deploy_model(model, config)], indent=2))
        return 0
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu_flags().items())
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {flags}")
    print(f"onnxruntime {onnxruntime.__version__}, batch {config.batch}, median of {config.repeats}; "
          f"plan: shipped policy on {config.hardware} under {config.budget}, {config.finetune_steps} KD steps; "
          f"pred: {config.cpu_preset}")
    print(f"{'model':<26} {'variant':<13} {'bits':<8} {'params':>7} {'KiB':>6} {'ms 1 thr':>9} {'ms all':>8} "
          f"{'meas/int8':>9} {'pred/int8':>9} {'acc ort':>8} {'acc torch':>9}", flush=True)
    for model in models:  # rows as each model finishes: a model takes minutes
        for r in run_deploy_model(model, config):
            predicted = f"{r.predicted_ratio:9.2f}" if r.predicted_ratio is not None else f"{'-':>9}"
            print(f"{r.model:<26} {r.variant:<13} {r.bits:<8} {r.params:>7} {r.onnx_kib:6.1f} {r.ms_one_thread:9.4f} "
                  f"{r.ms_all_threads:8.4f} {r.measured_ratio:9.2f} {predicted} {r.onnx_accuracy:8.4f} "
                  f"{r.torch_accuracy:9.4f}", flush=True)
    return 0


def _reliability(args: argparse.Namespace) -> int:
    from metacompress.benchmarks.reliability import run_reliability

    report = run_reliability(args.tasks, args.seed, args.only, progress=lambda outcome: print(outcome.line(), flush=True))
    for line in report.summary():
        print(line)
    ok = report.passed == len(report.outcomes) and not report.budget.over_budget and not report.budget.wrong_refusals
    return 0 if ok else 1


def _int_list(text: str | None) -> tuple[int, ...] | None:
    from metacompress.benchmarks.compare import BenchConfigError

    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BenchConfigError(f"--seeds {text!r} is not a comma list of integers; write e.g. 0,1,2") from None


def _agents(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from metacompress.benchmarks import compare
    from metacompress.benchmarks.compare_report import runs_table, write_run
    from metacompress.agents.registry import POLICY_FLAGS, PolicyPaths

    torch.set_num_threads(1)
    folders = {which: getattr(args, flag[2:].replace("-", "_")) for which, flag in POLICY_FLAGS.items()}
    paths = PolicyPaths(**{which: Path(p) if p else None for which, p in folders.items()})
    config = compare.AgentsBenchConfig(
        preset=args.preset, split=args.split, methods=tuple(m.strip() for m in args.methods.split(",")) if args.methods else None,
        seeds=_int_list(args.seeds), policies=paths, finetune_steps=args.finetune_steps, tasks=args.tasks,
        workers=args.workers, limits=not args.no_limits,
        executor=args.executor or ("ray" if args.ray_address else None), ray_address=args.ray_address,
    )
    bench = compare.prepare(compare.with_defaults(config))
    out = Path(args.out) if args.out else compare.default_out(bench)
    compare.check_out(out, args.overwrite)
    for note in bench.notes:
        print(f"note: {note}")
    if args.dry_run:
        print(runs_table(bench))
        print(f"{len(bench.runs)} runs on {len(bench.tasks)} tasks; estimated {bench.estimated_seconds / 60:.0f} min "
              f"with {bench.workers} worker(s) on an otherwise idle machine "
              "(metacompress.benchmarks.costs; a busy machine takes up to 2x)")
        print(f"command: {bench.command(out)}")
        return 0
    start = time.perf_counter()
    with tqdm(total=len(bench.runs), desc="(task, method, seed) runs") as bar:
        frame = compare.run_bench(bench, progress=bar.update)
    seconds = time.perf_counter() - start
    summary = write_run(out, bench, frame, seconds, args.overwrite)
    print(summary)
    print(f"wrote {out}/results.csv, summary.md, accuracy_vs_evaluations.png in {seconds / 60:.1f} min")
    return 0

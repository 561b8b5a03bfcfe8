"""What a training run is: ``TrainConfig`` (every knob, with named recipes) and the tasks it trains and validates on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metacompress.agents.policy_io import PolicyMetadata
from metacompress.envs.compression_env import OBSERVATIONS
from metacompress.envs.suite import SuiteTask, default_suite, generated_tasks, model_spec, sampled_tasks
from metacompress.envs.tasks import Task
from metacompress.envs.world import DEFAULT_SEARCH_FINETUNE_STEPS
from metacompress.envs.zoo.catalog import QUICK, get_entry
from metacompress.envs.zoo.generator import build_generated, generated_entry
from metacompress.errors import MetacompressError

log = logging.getLogger(__name__)

SHIPPED_RESIDUAL = Path(__file__).parent / "policies" / "default"

META_METHODS = ("reptile", "maml", "meta-sgd", "meta-curvature")
"""Meta-learners of the residual policy's head, one inner loop (``agents.meta_adapt``, ``agents.meta_train``)."""
PREDICTOR_METHODS = ("relation", "prototypical")
"""Few-shot predictors of unit option tables, the HAWQ ILP's scores (``agents.unit_predictors``): fitted, not RL-trained."""
METHODS = ("ppo", "rl2", "residual", *META_METHODS, *PREDICTOR_METHODS)
RECIPES: dict[str, dict] = {
    # The shipped default policy's recipe: the train split (models <= 3M MACs), ~55 min on 2 cores.
    "default": {},
    # The README tour: the quick zoo's training families, a few minutes.
    "quick": {
        "timesteps": 6_000,
        "models": ("mlp-w64-d1-digits", "cnn1d-w16-d2-mnist1d", "vgg-w8-d1-digits", "resnet-w8-d1-digits"),
        "eval_every": 2_000,
        "checkpoint_every": 2_000,
        "eval_tasks": 4,
    },
}
VALIDATION_FAMILIES = ("vgg",)
"""Zoo families of the train split left out of the residual planner's training: their tasks are the
validation split for every design, hyper-parameter and checkpoint choice (``bench agents --split validation``)."""
TIGHT_VALIDATION_TASKS = 32
"""Tight-budget tasks on the validation families' models (novelty ``budget``) added to the validation
split, so choices are also made where the held-out "budget" tasks and most deployments of small models are."""
VALIDATION_GENERATED = (5000, 5001, 5002, 5003, 5004, 5006, 5007, 5008, 5009, 5010, 5011, 5012)
"""Generated networks of a generator region no training run draws (training draws 0 .. generated_models - 1,
capped below 5000): the first twelve of the region at or above their accuracy floor (5005 is below it). The
validation split's unseen-family tasks, as the held-out split's unseen-family tasks are, on architectures
of the generator's grammar (conv, depthwise, inverted-residual, grouped, SE, dilated 1-D, MLP blocks)."""
VALIDATION_HARDWARE_SEED = 2
"""Seed of the validation split's hardware instances: new draws of the training archetypes (the train split
draws with seed 0, the held-out split's unseen archetypes with seed 1)."""
NOVEL_VALIDATION_TASKS = 24
"""Validation tasks with an unseen family (on ``VALIDATION_GENERATED``) and with unseen hardware (on the
validation families' models), each; so the split mirrors the held-out split's three novelties."""
# The few-shot agents' budgets under the default recipe (RecurrentPPO's learner is ~10x
# slower per step; Reptile runs its inner loops in one process).
ALGO_DEFAULTS: dict[str, dict] = {
    "rl2": {"timesteps": 60_000, "n_envs": 1, "attempts": 8},
    # the meta-learners adapt the shipped residual policy's head: short runs (<= 12 min on 2 busy cores)
    **{m: {"timesteps": 3_500, "validation_families": VALIDATION_FAMILIES, "search_finetune_steps": 0, "eval_tasks": 0,
           "checkpoint_every": 1_000} for m in META_METHODS},
    # the unit predictors: option tables of the cheapest training-family models, then a seconds-long fit
    **{m: {"validation_families": VALIDATION_FAMILIES, "eval_tasks": 0} for m in PREDICTOR_METHODS},
    # the solver-anchored residual planner: vgg tasks of the train split are its validation split. Adding 240
    # tasks on generated networks with budgets over the whole range ({"generated_models": 120, "generated_tasks":
    # 240} via --config) trained a policy 0.93 points worse on the validation split (README), so it is not the recipe
    "residual": {"timesteps": 40_000, "validation_families": VALIDATION_FAMILIES, "log_std_init": -1.5, "eval_every": 5_000, "eval_tasks": 12},
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run (defaults: the shipped default policy's recipe).

    Args:
        algo: ``ppo`` (zero-shot, task-conditioned), ``rl2`` (RecurrentPPO on K-attempt
            trials), ``residual`` (PPO with the whole-network encoder on tasks anchored on the
            exact solver's plan, rewarded by the gain over it: ``agents.residual``), or a
            meta-learner of that policy's head for few-shot adaptation: ``reptile``, ``maml``
            (first-order), ``meta-sgd`` or ``meta-curvature`` (``agents.meta_train``).
        split: suite split to train on (``train``; held-out tasks are only monitored).
        timesteps: environment steps (one step = one unit decision).
        seed: seeds the suite sampling, the envs and the networks.
        models: restrict training tasks to these zoo models (empty = all of the split).
        max_model_macs: leave out the split's models above this many MACs per sample (their
            proxy costs 1-3 s on one core; on 2 cores the 60-minute budget buys more
            tasks without them). 0 keeps every model.
        n_envs: parallel environments; ``vec_env`` = ``subproc``, ``dummy`` or ``ray`` (Ray actors,
            ``agents.ray_vec_env``; PPO and RL^2 only).
        log_std_init: initial log std of the Gaussian policy; -1 explores near the anchor
            (action 0, the uniform plan that fits) rather than across the whole range.
        attempts: attempts per episode for ``rl2``.
        reptile_step: Reptile's outer step size (annealed linearly to 0).
        meta_init: the residual policy whose head the meta-learners start from and adapt.
        eval_every / eval_tasks: monitoring cadence (steps) and number of held-out tasks.
        checkpoint_every: steps between checkpoints.
        search_finetune_steps: KD steps in every proxy evaluation (the reward's recovery).
        generated_models / generated_tasks: also train on ``generated_tasks`` tasks drawn over
            the generated networks among the first ``generated_models`` that met their accuracy
            floor, with budgets over the whole range, tight ones included (missing networks are
            built first, as ``metacompress zoo build --generated N`` would); 0 = none.
        predictor_models / predictor_steps: ``relation`` and ``prototypical``: the training models
            whose unit option tables are the support set (cheapest first, families in turn; 15 is
            every train-split model of the training families under ``max_model_macs``: about 5.5 min
            of one core's CPU the first time, zoo training and probes included, seconds once cached)
            and the Adam steps of the fit.
        validation_families: zoo families of the train split left out of training; their
            tasks form the validation split that picks the checkpoint (``residual``; the
            held-out split is never used to choose anything).
    """

    algo: str = "ppo"
    split: str = "train"
    timesteps: int = 200_000
    seed: int = 0
    models: tuple[str, ...] = ()
    max_model_macs: int = 3_000_000
    n_envs: int = 2
    vec_env: str = "subproc"
    n_steps: int = 256
    batch_size: int = 128
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    net_arch: tuple[int, ...] = (128, 128)
    log_std_init: float = -1.0
    lstm_hidden_size: int = 64
    attempts: int = 4
    reptile_step: float = 0.5
    meta_init: str = str(SHIPPED_RESIDUAL)
    eval_every: int = 10_000
    eval_tasks: int = 8
    checkpoint_every: int = 10_000
    search_finetune_steps: int = DEFAULT_SEARCH_FINETUNE_STEPS
    generated_models: int = 0
    generated_tasks: int = 0
    predictor_models: int = 15
    predictor_steps: int = 300
    validation_families: tuple[str, ...] = ()

    @property
    def observation(self) -> str:
        """The env observation the policy reads: the whole network for the residual planner."""
        return "network" if self.algo == "residual" or self.algo in META_METHODS else "step"

    def __post_init__(self) -> None:
        problems = []
        if self.algo not in METHODS:
            problems.append(f"algo {self.algo!r} is unknown (use {', '.join(METHODS)})")
        if self.timesteps < 1 or self.n_envs < 1:
            problems.append(f"timesteps and n_envs must be >= 1, got {self.timesteps} and {self.n_envs}")
        if self.vec_env not in ("subproc", "dummy", "ray"):
            problems.append(f"vec_env {self.vec_env!r} is unknown (use subproc, dummy or ray)")
        if self.vec_env == "ray" and self.algo == "reptile":
            problems.append("reptile trains one task at a time in this process; use --executor inprocess or process with it")
        if self.algo in PREDICTOR_METHODS and (self.predictor_models < 2 or self.predictor_steps < 1):
            problems.append(f"a unit predictor needs predictor_models >= 2 and predictor_steps >= 1, got {self.predictor_models} and {self.predictor_steps}")
        if self.algo == "rl2" and self.attempts < 2:
            problems.append(f"rl2 needs attempts >= 2 per trial, got {self.attempts}")
        if not 0 <= self.generated_models <= min(VALIDATION_GENERATED):
            problems.append(f"generated_models must be in 0..{min(VALIDATION_GENERATED)} (the networks from "
                            f"{min(VALIDATION_GENERATED)} on are the validation split's), got {self.generated_models}")
        if problems:
            raise MetacompressError("invalid training config: " + "; ".join(problems))

    @classmethod
    def recipe(cls, preset: str = "default", algo: str = "ppo") -> "TrainConfig":
        """A named recipe (``RECIPES``: ``default``, the shipped policies', or ``quick``) for ``algo``.

        Raises:
            MetacompressError: for an unknown recipe or algorithm.
        """
        if preset not in RECIPES:
            raise MetacompressError(f"recipe {preset!r} is unknown; use one of {', '.join(RECIPES)}")
        return cls(algo=algo, **{**(ALGO_DEFAULTS.get(algo, {}) if preset == "default" else {}), **RECIPES[preset]})

    def metadata(self, training: dict) -> PolicyMetadata:
        return PolicyMetadata(
            observation=self.observation,
            observation_dim=OBSERVATIONS[self.observation],
            algo="recurrent_ppo" if self.algo == "rl2" else "ppo",
            net_arch=tuple(self.net_arch),
            lstm_hidden_size=self.lstm_hidden_size if self.algo == "rl2" else 0,
            attempts=self.attempts if self.algo == "rl2" else 1,
            method=self.algo,
            training=training,
        )


def training_tasks(config: TrainConfig) -> list[Task]:
    """The tasks of ``config.split``, restricted to ``config.models`` if given."""
    tasks = default_suite().split(config.split)
    if config.models:
        tasks = [t for t in tasks if t.model in config.models]
    if config.max_model_macs:
        tasks = [t for t in tasks if model_spec(t.model).macs() <= config.max_model_macs]
    tasks = [t for t in tasks if get_entry(t.model).family not in config.validation_families]
    if config.generated_models and config.generated_tasks:
        usable = [r.entry.id for r in build_generated(config.generated_models).kept]  # resumable: cached ones are read
        if not usable:
            raise MetacompressError(
                f"none of the first {config.generated_models} generated networks met its accuracy floor; "
                "ask for more with a larger generated_models"
            )
        tasks += generated_tasks(usable, config.generated_tasks, seed=config.seed)
    if not tasks:
        raise MetacompressError(f"no {config.split} tasks use models {list(config.models)}; see `metacompress suite list`")
    return tasks


def validation_entries(families: tuple[str, ...] = VALIDATION_FAMILIES) -> list[SuiteTask]:
    """The validation split, nothing in it trained on, with the held-out split's three novelties:

    - novelty "": the train split's tasks of ``families`` (left out of training);
    - "budget": ``TIGHT_VALIDATION_TASKS`` tight-budget tasks on their models;
    - "hardware": ``NOVEL_VALIDATION_TASKS`` training-range tasks on their models and on hardware
      instances no other split runs on (``VALIDATION_HARDWARE_SEED``);
    - "family": ``NOVEL_VALIDATION_TASKS`` training-range tasks on generated networks of a
      generator region training never draws (``VALIDATION_GENERATED``; trained and cached on first use).
    """
    suite = default_suite()
    config = suite.config
    entries = [e for e in suite.entries("train") if get_entry(e.task.model).family in families]
    models = sorted({e.task.model for e in entries})
    generated = [generated_entry(i).id for i in VALIDATION_GENERATED]
    return (
        entries
        + sampled_tasks(models, TIGHT_VALIDATION_TASKS, config.tight_budgets, config, seed=11, novelty="budget")
        + sampled_tasks(models, NOVEL_VALIDATION_TASKS, config.train_budgets, config, seed=12, novelty="hardware",
                        hardware_seed=VALIDATION_HARDWARE_SEED)
        + sampled_tasks(generated, NOVEL_VALIDATION_TASKS, config.train_budgets, config, seed=13, novelty="family")
    )


def monitoring_tasks(config: TrainConfig) -> list[Task]:
    """A fixed, seeded sample of validation tasks if the config has a validation split, else of held-out tasks.

    The validation sample takes its tasks evenly from the split's four kinds (tight budgets,
    unseen family, unseen hardware, the rest). Quick runs prefer small models.
    """
    if config.eval_tasks <= 0:
        return []
    if config.validation_families:
        entries = validation_entries(config.validation_families)
        if config.max_model_macs:
            entries = [e for e in entries if model_spec(e.task.model).macs() <= config.max_model_macs]
        rng = np.random.default_rng(config.seed)
        chosen = []
        kinds = ("budget", "family", "hardware", "")
        for k, novelty in enumerate(kinds):
            share = config.eval_tasks // len(kinds) + (k < config.eval_tasks % len(kinds))
            pool = [e.task for e in entries if e.novelty == novelty]
            picks = rng.choice(len(pool), size=min(share, len(pool)), replace=False)
            chosen += [pool[i] for i in sorted(picks)]
        return chosen
    heldout = default_suite().split("heldout")
    if config.models:
        quick = {e.id for e in QUICK}
        heldout = [t for t in heldout if t.model in quick or t.model in config.models] or heldout
    rng = np.random.default_rng(config.seed)
    picks = rng.choice(len(heldout), size=min(config.eval_tasks, len(heldout)), replace=False)
    return [heldout[i] for i in sorted(picks)]

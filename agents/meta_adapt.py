"""One inner loop, four meta-learners: Reptile, first-order MAML, Meta-SGD and Meta-Curvature.

Few-shot adaptation of the solver-anchored residual policy (``agents.residual``) on a new
task: the policy's trunk (the whole-network encoder and the actor MLP) stays as trained and
only its **actor head** (``action_net``: the linear map from the actor's latent to the mean
correction of each unit's action) adapts, by a policy-gradient (REINFORCE) step on the
task's trial evaluations. With a fixed exploration width ``sigma`` the Gaussian policy's
``-A * log p(a)`` is ``A * ||a - mu||^2 / (2 sigma^2)`` plus a constant, so the support loss is

    L(W, b) = mean_i A_i * mean_t 1/2 ||a_it - (W z_it + b)||^2

over the support trials ``i`` (``z``: the frozen actor latent at decision ``t``, ``a``: the
raw action taken, ``A``: the trial's proxy gain, centred and scaled over the set); the
``sigma^2`` factor is absorbed into the step size. ``InnerLoop.adapt`` takes ``steps``
gradient steps on it, each gradient taken at the current head and then held constant
(first-order: no second derivatives), and the variants differ only in how a gradient
``(G_W, g_b)`` becomes a step:

- ``reptile`` (Nichol et al. 2018) and ``maml`` (first-order MAML, Finn et al. 2017, sec. 5.2):
  ``W - alpha * G_W`` with the fixed ``INNER_STEP``; they differ in the outer loop
  (``agents.meta_train``): Reptile moves the initialisation toward the adapted head,
  first-order MAML follows the query loss's gradient at the adapted head.
- ``meta-sgd`` (Li et al. 2017): ``W - exp(log_alpha_W) * G_W`` elementwise, a learned
  step size per parameter, kept positive by the log-parametrisation and initialised to
  ``INNER_STEP`` (so it starts as Reptile's/MAML's step).
- ``meta-curvature`` (Park & Oliva, NeurIPS 2019, sec. 3): ``W - alpha * M_out G_W M_in``,
  ``b - alpha * M_out g_b``: a learned per-layer preconditioner (one matrix per dimension of
  the head's weight, a Kronecker-factored curvature), initialised to the identity.

Because each step's gradient is a constant, the adapted head is differentiable in the
initial head (with Jacobian the identity: first-order) and exactly in the meta-parameters,
so one ``backward`` of the query loss gives every variant's outer gradient.

``TrialActor`` samples a trial (exploration of fixed width around the head's mean) and
records what the loss needs; ``MetaFewShotPlanner`` adapts with N evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from metacompress.agents.planner import PlanResult, check_evaluations, rollout
from metacompress.agents.policy_io import PolicyMetadata
from metacompress.agents.residual import EXPLORATION_SCALE, FEW_SHOT_NOISE, ResidualPlanner
from metacompress.envs.compression_env import CompressionEnv
from metacompress.envs.context import TaskContext
from metacompress.errors import PolicyError

VARIANTS = ("reptile", "maml", "meta-sgd", "meta-curvature")
INNER_STEP = 0.03
"""The inner step size of Reptile and first-order MAML, and Meta-SGD's initial one. A 1-minute
smoke run with 0.3 dropped the adapted head's query trials 30-50 points below the support
trials (steps far past the exploration width); 0.03 is that scaled down 10x, not yet tuned
on the validation split."""
INNER_STEPS = 3
MAX_GRADIENT_NORM = 1.0
"""Each inner gradient (W and b together) is scaled down to at most this norm before the step.
The support loss is a quadratic whose curvature ``mean_i A_i z z^T`` is indefinite (trials
with negative advantage push the mean away from their actions without bound), so repeated
steps diverge along those directions: a Reptile run on the default recipe reached head
weights of 1e30 and NaN actions after 36 outer iterations (an outlier trial at A = -2.5 with
``||z||^2`` about 50 grows that direction ~1.5x per step). Measured gradient norms at the
shipped head are 0.3-0.7 on training tasks, so 1.0 leaves ordinary steps unchanged and
bounds one adaptation's move to ``steps * step * 1.0`` (per-parameter Meta-SGD and
Meta-Curvature scale that by their learned factors)."""
ROUND = 4
"""Trials per adaptation round of the few-shot planner: the head re-adapts from its
meta-learned initialisation on every trial so far after each round."""

Head = tuple[torch.Tensor, torch.Tensor]  # (W (actions, hidden), b (actions,))


@dataclass(frozen=True)
class Trials:
    """Trial evaluations of one task: what the support or query loss needs.

    Args:
        latents: (trials, decisions, hidden) the frozen actor latent at every decision.
        actions: (trials, decisions, 3) the raw actions sampled there (before clipping and scaling).
        gains: (trials,) each trial's proxy gain (any per-task offset: it is centred away).
    """

    latents: torch.Tensor
    actions: torch.Tensor
    gains: torch.Tensor

    def __len__(self) -> int:
        return len(self.gains)


def advantages(gains: torch.Tensor) -> torch.Tensor:
    """Gains centred and scaled to unit std over the set (zeros when they do not differ)."""
    centred = gains - gains.mean()
    scale = centred.abs().max()
    if len(gains) < 2 or float(scale) < 1e-12:
        return torch.zeros_like(gains)
    return centred / centred.std().clamp_min(1e-12)


def surrogate(head: Head, trials: Trials) -> torch.Tensor:
    """The REINFORCE loss of a fixed-width Gaussian head on ``trials`` (see the module docstring)."""
    weight, bias = head
    mean = trials.latents @ weight.T + bias  # (trials, decisions, 3)
    distance = 0.5 * ((trials.actions - mean) ** 2).sum(dim=-1).mean(dim=-1)
    return (advantages(trials.gains) * distance).mean()


class InnerLoop(nn.Module):
    """The shared inner loop and a variant's meta-parameters (see the module docstring).

    Args:
        variant: one of ``VARIANTS``.
        hidden: width of the actor latent (the head's input).
        actions: the head's outputs (3: prune, weight bits, activation bits).
        step: the fixed (``reptile``, ``maml``, ``meta-curvature``) or initial (``meta-sgd``) step size.
        steps: gradient steps per adaptation.
        max_gradient_norm: each step's gradient is scaled down to at most this norm (``MAX_GRADIENT_NORM``).

    Raises:
        PolicyError: for an unknown variant.
    """

    def __init__(self, variant: str, hidden: int, actions: int = 3, step: float = INNER_STEP, steps: int = INNER_STEPS,
                 max_gradient_norm: float = MAX_GRADIENT_NORM) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise PolicyError(f"meta-learner {variant!r} is unknown; use one of {', '.join(VARIANTS)}")
        self.variant, self.step, self.steps = variant, float(step), int(steps)
        self.max_gradient_norm = float(max_gradient_norm)
        if variant == "meta-sgd":
            self.log_alpha_weight = nn.Parameter(torch.full((actions, hidden), math.log(step)))
            self.log_alpha_bias = nn.Parameter(torch.full((actions,), math.log(step)))
        if variant == "meta-curvature":
            self.m_out = nn.Parameter(torch.eye(actions))
            self.m_in = nn.Parameter(torch.eye(hidden))

    def update(self, head: Head, gradient: Head) -> Head:
        """One inner step: the head after following ``gradient`` by this variant's rule."""
        (weight, bias), (g_weight, g_bias) = head, gradient
        if self.variant == "meta-sgd":
            return weight - self.log_alpha_weight.exp() * g_weight, bias - self.log_alpha_bias.exp() * g_bias
        if self.variant == "meta-curvature":
            return weight - self.step * self.m_out @ g_weight @ self.m_in, bias - self.step * self.m_out @ g_bias
        return weight - self.step * g_weight, bias - self.step * g_bias

    def adapt(self, head: Head, support: Trials) -> Head:
        """``steps`` first-order steps on the support loss (gradients norm-capped); differentiable in ``head`` and the meta-parameters."""
        for _ in range(self.steps):
            leaves = tuple(p.detach().requires_grad_(True) for p in head)
            with torch.enable_grad():
                gradient = torch.autograd.grad(surrogate(leaves, support), leaves)
            norm = float(torch.sqrt(sum((g**2).sum() for g in gradient)))
            if norm > self.max_gradient_norm:
                gradient = tuple(g * (self.max_gradient_norm / norm) for g in gradient)
            head = self.update(head, gradient)
        return head

    def step_sizes(self) -> dict[str, float]:
        """A summary for logs: the mean step size, or the preconditioner's distance from the identity."""
        if self.variant == "meta-sgd":
            return {"alpha_mean": float(self.log_alpha_weight.exp().mean()), "alpha_min": float(self.log_alpha_weight.exp().min())}
        if self.variant == "meta-curvature":
            eye = lambda m: torch.eye(len(m))  # noqa: E731
            return {"m_out_offdiag": float((self.m_out - eye(self.m_out)).norm()), "m_in_offdiag": float((self.m_in - eye(self.m_in)).norm())}
        return {"alpha_mean": self.step}


def head_of(policy: ActorCriticPolicy) -> Head:
    """The policy's actor head parameters (``action_net``: weight, bias)."""
    return policy.action_net.weight, policy.action_net.bias


def inner_loop_for(policy: ActorCriticPolicy, variant: str, state: dict[str, torch.Tensor] | None = None) -> InnerLoop:
    """The inner loop of ``variant`` sized for ``policy``'s head, with saved meta-parameters if given.

    Raises:
        PolicyError: if ``state`` does not hold this variant's meta-parameters.
    """
    weight, _ = head_of(policy)
    loop = InnerLoop(variant, hidden=weight.shape[1], actions=weight.shape[0])
    if state is not None:
        try:
            loop.load_state_dict(state)
        except RuntimeError as exc:
            raise PolicyError(f"the saved {variant} meta-parameters do not fit this policy ({str(exc).splitlines()[0]}); retrain it") from exc
    return loop


class TrialActor:
    """Acts with a head over the policy's frozen trunk, exploring with fixed width; records the trial.

    Args:
        policy: the residual policy (its trunk computes the actor latent).
        head: the head to act with (mean = ``W z + b``).
        noise: the exploration std in raw action space (0: the head's mean).
        rng: draws the exploration.
        action_scale: the scale trials read the policy at (``residual.EXPLORATION_SCALE``).
    """

    def __init__(self, policy: ActorCriticPolicy, head: Head, noise: float, rng: np.random.Generator | None, action_scale: float = EXPLORATION_SCALE) -> None:
        self.policy, self.noise, self.rng, self.action_scale = policy, noise, rng, action_scale
        self.head = tuple(p.detach() for p in head)
        self.latents: list[torch.Tensor] = []
        self.actions: list[np.ndarray] = []

    def __call__(self, observation: np.ndarray, step: int = 0) -> np.ndarray:
        with torch.no_grad():
            obs = torch.as_tensor(observation[None], dtype=torch.float32)
            latent = self.policy.mlp_extractor.forward_actor(self.policy.extract_features(obs, self.policy.pi_features_extractor))[0]
            mean = (latent @ self.head[0].T + self.head[1]).numpy()
        raw = mean + (self.rng.normal(0.0, self.noise, mean.shape) if self.noise > 0 else 0.0)
        self.latents.append(latent)
        self.actions.append(raw.astype(np.float32))
        return self.action_scale * np.clip(raw, -1.0, 1.0).astype(np.float32)


def as_trials(actors: list[TrialActor], gains: list[float]) -> Trials:
    """The trials the actors recorded (one finished episode each), with their gains."""
    return Trials(
        torch.stack([torch.stack(a.latents) for a in actors]),
        torch.as_tensor(np.stack([np.stack(a.actions) for a in actors])),
        torch.as_tensor(gains, dtype=torch.float32),
    )


class MetaFewShotPlanner(ResidualPlanner):
    """N evaluations: the solver's plan, the zero-shot plan, rounds of trials of an adapting head, then the leaders re-scored.

    After each round of ``ROUND`` trials, the head re-adapts from its meta-learned
    initialisation on every trial so far (the support set: the task's trial evaluations on the
    search split). The last evaluations re-score the best plans with a few KD steps and the best
    of those is returned (``ResidualPlanner._closing``), as in sample-and-select.

    Args:
        policy: a residual policy whose head was meta-trained (``metacompress train --algo VARIANT``).
        metadata: its description (``method`` is one of ``VARIANTS``).
        loop: its inner loop (``inner_loop_for`` with the saved meta-parameters).
    """

    def __init__(self, policy: ActorCriticPolicy, metadata: PolicyMetadata, loop: InnerLoop) -> None:
        if metadata.observation != "network" or metadata.method not in VARIANTS:
            raise PolicyError(
                f"few-shot meta-adaptation needs a policy trained with `metacompress train --algo {'|'.join(VARIANTS)}`; "
                f"this one is method {metadata.method!r} with {metadata.observation!r} observations"
            )
        super().__init__(policy, metadata)
        self.loop, self.name = loop, f"few-shot-{metadata.method}"

    def plan(self, context: TaskContext, evaluations: int = 30, seed: int = 0) -> PlanResult:
        check_evaluations(self.name, evaluations)
        _, _, book = self._opening(context, evaluations)
        rng = np.random.default_rng(seed)
        initial = head_of(self.policy)
        head: Head = tuple(p.detach() for p in initial)
        actors: list[TrialActor] = []
        gains: list[float] = []
        rounds = 0
        while not book.exhausted:
            for _ in range(ROUND):
                if book.exhausted:
                    break
                actor = TrialActor(self.policy, head, FEW_SHOT_NOISE, rng)
                plan, change, info = rollout(book.env, actor)
                book.record(plan, change, decisions=info["decisions"])
                actors.append(actor)
                gains.append(change)
            with torch.no_grad():
                head = tuple(p.detach() for p in self.loop.adapt(initial, as_trials(actors, gains)))
            rounds += 1
        return self._closing(book, evaluations, adaptation_rounds=rounds, variant=self.metadata.method)

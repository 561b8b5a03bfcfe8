"""The one training loop of the zoo, plus evaluation and MAC counting.

One loop for every family and dataset (AdamW, one-cycle cosine schedule, cross-entropy),
so a model's accuracy depends on its entry's numbers only, never on a per-family copy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from metacompress.envs.zoo.datasets import Split

EVAL_BATCH = 1024
TRAINING_REVISION = 1
"""Bump when a change here or in the data changes the weights a recipe produces: cached
zoo models record it, and ones made by another revision are rebuilt."""
TRAIN_THREADS = 1
"""Intra-op threads while training. On the 2-core build machine, with other processes
running, one thread trained the quick zoo 20x faster than two (OpenMP threads spin-wait
for a busy core); and one thread makes the trained weights independent of the core count."""


def train_model(
    model: nn.Module,
    train: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    generator: torch.Generator,
) -> None:
    """Fit ``model`` in place on ``train`` with AdamW and a one-cycle cosine schedule.

    Deterministic given the model's initial weights and ``generator`` (which orders the
    batches): every op used is deterministic on CPU, and training runs on
    ``TRAIN_THREADS`` threads whatever the machine has.

    Args:
        model: the untrained model; left in eval mode and contiguous memory format.
        train: the training split.
        epochs: passes over ``train``, >= 1.
        batch_size: samples per step; the last partial batch is dropped when it would
            hold a single sample (BatchNorm cannot train on one).
        lr: peak learning rate of the one-cycle schedule.
        weight_decay: AdamW decoupled weight decay.
        generator: RNG that shuffles the batches.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        _fit(model, train, epochs, batch_size, lr, weight_decay, generator)
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _fit(
    model: nn.Module, train: Split, epochs: int, batch_size: int, lr: float, weight_decay: float, generator: torch.Generator
) -> None:
    x, n = train.x, len(train)
    if x.dim() == 4:  # channels-last convs run ~2x faster on CPU (depthwise most)
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    steps_per_epoch = n // batch_size + (n % batch_size > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[index]), train.y[index]).backward()
            optimizer.step()
            schedule.step()
    model.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def model_accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``split``, in [0, 1]."""
    model.eval()
    correct = 0
    for start in range(0, len(split), EVAL_BATCH):
        logits = model(split.x[start : start + EVAL_BATCH])
        correct += int((logits.argmax(dim=1) == split.y[start : start + EVAL_BATCH]).sum())
    return correct / len(split)


def module_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def module_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2): convolutions,
    linear layers and the attention matmuls; elementwise ops, normalisation and pooling
    are not counted.
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2

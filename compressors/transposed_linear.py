"""A Linear stored input-major (GPT-2's ``Conv1D`` in transformers) becomes an ``nn.Linear`` in the private copy.

OpenAI's GPT and GPT-2 code, and transformers' port of it (``transformers.pytorch_utils.Conv1D``,
used by GPT-2, DistilGPT-2, DecisionTransformer and others), compute every projection as
``x @ weight + bias`` with ``weight`` of shape ``(in, out)``: a Linear whose weight is stored
transposed. No stage would see it as a layer (it is not an ``nn.Linear``), so a GPT-2 would
keep every projection in fp32. The same function as an ``nn.Linear`` is compressed like any
other; the match is by structure (the class name ``Conv1D``, ``nf``/``nx`` attributes and a
``(nx, nf)`` weight), so transformers need not be installed.
"""

from __future__ import annotations

from torch import nn


def is_transposed_linear(module: nn.Module) -> bool:
    """A GPT-style ``Conv1D``: ``forward(x) = x @ weight + bias`` with ``weight`` (nx, nf)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, nn.Parameter) and weight.dim() == 2
            and tuple(weight.shape) == (getattr(module, "nx", None), getattr(module, "nf", None))
            and isinstance(getattr(module, "bias", None), nn.Parameter))


def as_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what ``module`` (``is_transposed_linear``) computes."""
    linear = nn.Linear(module.nx, module.nf, device=module.weight.device, dtype=module.weight.dtype)
    linear.weight = nn.Parameter(module.weight.detach().t().clone(), requires_grad=module.weight.requires_grad)
    linear.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
    linear.train(module.training)
    return linear

"""Search mode: apply a plan to one long-lived working copy with masks and fake quantization.

The RL loop evaluates thousands of plans on the same model, so nothing here rebuilds a
graph or deep-copies the model per evaluation: the working copy's tensors are restored
from a snapshot, pruned channels are zeroed (which is exactly equivalent to removing
them, see ``graph``), weights are fake-quantized, and ``recovery.calibrate`` runs. Export
mode (``export.py``) runs the same quantization and calibration on a physically pruned
copy, so the two agree.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from metacompress.compressors.graph import ModelGraph
from metacompress.compressors.layer_norm import clear_removed, maskable_norms
from metacompress.compressors.plan import Plan
from metacompress.compressors.quant import ActivationQuantizer, attach_activation_quantizers, quantize_weight, weight_scales
from metacompress.compressors.metrics import Distillation
from metacompress.compressors.recovery import calibrate, distill
from metacompress.compressors.spec import ModelSpec
from metacompress.compressors.surgery import mask_unit, plain_copy

SCALE_CACHE_VALUES = 2**24  # remembered weight scales per search model (64 MiB of fp32)


def layer_bits(spec: ModelSpec, plan: Plan) -> tuple[dict[str, int], dict[str, int]]:
    """Per-layer (weight bits, activation bits) of a plan, keyed by layer name."""
    w_bits = {layer.name: plan.decisions[layer.unit].w_bits for layer in spec.layers}
    a_bits = {layer.name: plan.decisions[layer.unit].a_bits for layer in spec.layers}
    return w_bits, a_bits


@torch.no_grad()
def quantize_weights(model: nn.Module, w_bits: dict[str, int], keep_scales: bool = False,
                     scales_of: Callable[[str, int], torch.Tensor] | None = None) -> None:
    """Replace each layer's weight by its per-channel fake-quantized value, in place.

    With ``keep_scales`` (export mode) each layer also gets a ``weight_scale`` buffer, so
    the integer codes can be stored and the weight rebuilt bit-exactly on load.
    ``scales_of(name, bits)`` gives a layer's scales where the caller knows them already.
    """
    for name, bits in w_bits.items():
        layer = model.get_submodule(name)
        scales = weight_scales(layer.weight, bits) if scales_of is None else scales_of(name, bits)
        layer.weight.copy_(quantize_weight(layer.weight, bits, scales))
        if keep_scales:
            layer.register_buffer("weight_scale", scales.float())


class SearchModel:
    """A working copy of a model on which plans are applied in place, fast.

    Args:
        model: the user's model (never modified; copied once here by ``plain_copy``).
        graph: its ``ModelGraph`` from ``graph.build_graph``.
        calibration: input batches for BatchNorm and activation-range calibration.
    """

    def __init__(self, model: nn.Module, graph: ModelGraph, calibration: Sequence[torch.Tensor]) -> None:
        self.graph = graph
        self.spec = graph.spec
        self.calibration = list(calibration)
        self.model = plain_copy(model, graph.spec.routes, graph.spec.folds).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.quantizers: dict[str, ActivationQuantizer] = attach_activation_quantizers(
            self.model, [layer.name for layer in self.spec.computing_layers]
        )
        self._snapshot = {k: v.clone() for k, v in self.model.state_dict().items()}
        self._norms = maskable_norms(self.model)  # their removed channels are search state outside the snapshot
        self._removed: list[torch.Tensor] = []
        # a layer's masked weight is fixed by how many channels each unit masking it removes
        masked_by: dict[str, set[int]] = {}
        for index, unit_graph in enumerate(graph.units):
            for target in unit_graph.targets:
                masked_by.setdefault(target.module, set()).add(index)
        self._masked_by = {layer.name: tuple(sorted(masked_by.get(layer.name, ()))) for layer in self.spec.layers}
        self._scales: dict[tuple, torch.Tensor] = {}
        self._scale_values = 0

    @torch.no_grad()
    def apply(self, plan: Plan) -> nn.Module:
        """Restore the snapshot, then mask, quantize and calibrate for ``plan``.

        Returns:
            The working copy (valid until the next ``apply``).
        """
        plan.check_model(self.spec)
        for key, value in self.model.state_dict().items():
            value.copy_(self._snapshot[key])
        clear_removed(self._norms)
        self._removed = [
            unit_graph.removed_channels(unit, decision.kept_channels)
            for unit, unit_graph, decision in zip(self.spec.units, self.graph.units, plan.decisions)
        ]
        self._apply_masks()
        w_bits, a_bits = layer_bits(self.spec, plan)
        quantize_weights(self.model, w_bits, scales_of=self._masked_weight_scales)
        calibrate(self.model, self.quantizers, a_bits, self.calibration)
        return self.model

    def _masked_weight_scales(self, name: str, bits: int) -> torch.Tensor:
        """``weight_scales`` of a layer's masked weight, remembered by what fixes that weight.

        The MSE search over clip ratios reads the whole weight eight times (0.7 s of ViT-B/16's
        4 s evaluation); most plans a search evaluates share most layers' masks and bits.
        At most ``SCALE_CACHE_VALUES`` scales are kept; past that the cache starts again.
        """
        key = (name, bits, tuple(len(self._removed[u]) for u in self._masked_by[name]))
        if key not in self._scales:
            scales = weight_scales(self.model.get_submodule(name).weight, bits)
            if self._scale_values + scales.numel() > SCALE_CACHE_VALUES:
                self._scales.clear()
                self._scale_values = 0
            self._scales[key] = scales
            self._scale_values += scales.numel()
        return self._scales[key]

    def _apply_masks(self) -> None:
        for unit_graph, removed in zip(self.graph.units, self._removed):
            mask_unit(self.model, unit_graph, removed)

    def finetune(
        self, plan: Plan, teacher: nn.Module, inputs: torch.Tensor, steps: int, seed: int = 0, lr: float = 1e-3, loss: Distillation = "logits"
    ) -> nn.Module:
        """Apply ``plan``, then a short KD fine-tune (``loss``: see ``distill``) that keeps the masks, then recalibrate."""
        self.apply(plan)
        if steps <= 0:
            return self.model
        w_bits, a_bits = layer_bits(self.spec, plan)
        for p in self.model.parameters():
            p.requires_grad_(True)
        try:
            distill(self.model, teacher, inputs, w_bits, steps, lr=lr, seed=seed, after_step=self._apply_masks, loss=loss)
        finally:
            for p in self.model.parameters():
                p.requires_grad_(False)
        quantize_weights(self.model, w_bits)
        calibrate(self.model, self.quantizers, a_bits, self.calibration)
        return self.model

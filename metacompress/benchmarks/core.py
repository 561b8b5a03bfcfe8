"""``metacompress bench core``: is pruning really faster, and is search mode cheap enough?

Two numbers on a ResNet-style CNN (``envs.families`` ResNet, stem + 3 stages):

1. CPU latency of the exported model at 50% channels vs the original. The exported
   model is measured with its activation quantizers switched off, because this CPU runs
   fp32 kernels either way: the speedup comes from the physically smaller dense layers.
   (With the fake quantizers on, the simulation overhead is reported too.)
2. The cost of one search-mode evaluation (restore, mask, fake-quantize, recalibrate,
   score the search split) relative to one plain forward pass of the original model over
   the same search data: the forward pass is the physical limit of any evaluator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from metacompress.benchmarks.timing import median_seconds
from metacompress.compressors.export import export
from metacompress.compressors.graph import build_graph
from metacompress.compressors.masking import SearchModel
from metacompress.compressors.plan import Plan
from metacompress.compressors.recovery import accuracy, batches_of
from metacompress.envs.zoo.families import build_model


@dataclass(frozen=True)
class CoreBenchConfig:
    """Knobs of the core benchmark (defaults are what the README quotes)."""

    width: int = 32
    depth: int = 2
    image: int = 28
    batch: int = 64
    search_samples: int = 1000
    calibration_samples: int = 256
    threads: int = 1
    repeats: int = 7
    seed: int = 0


@dataclass(frozen=True)
class CoreBenchResult:
    params_original: int
    params_pruned: int
    latency_original_ms: float
    latency_pruned_ms: float
    latency_pruned_simulated_ms: float
    speedup: float
    forward_search_split_ms: float
    search_evaluation_ms: float
    evaluation_over_forward: float

    def as_dict(self) -> dict:
        return asdict(self)


def _set_quantizers(model: torch.nn.Module, enabled_bits: dict[str, int] | None) -> dict[str, int]:
    """Switch activation quantizers off (None) or back to the given bits; return the old bits."""
    old = {}
    for name, module in model.named_modules():
        quantizer = getattr(module, "input_quantizer", None)
        if quantizer is not None:
            old[name] = int(quantizer.bits)
            quantizer.bits.fill_(0 if enabled_bits is None else enabled_bits[name])
    return old


@torch.no_grad()
def run_core_bench(config: CoreBenchConfig = CoreBenchConfig()) -> CoreBenchResult:
    """Measure both numbers; see the module docstring."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        model = build_model("resnet", (1, config.image, config.image), 10, config.width, config.depth).eval()
        data = torch.randn(config.search_samples, 1, config.image, config.image, generator=generator)
        labels = torch.randint(0, 10, (config.search_samples,), generator=generator)
        calibration = batches_of(data[: config.calibration_samples], 128)
        with torch.enable_grad():
            graph = build_graph(model, data[:8])
        half = Plan.uniform(graph.spec, prune=0.5, w_bits=8, a_bits=8)
        compressed = export(model, half, data[:8], calibration, graph=graph)
        batch = data[: config.batch]

        latency_original = median_seconds(lambda: model(batch), config.repeats)
        latency_simulated = median_seconds(lambda: compressed(batch), config.repeats)
        bits = _set_quantizers(compressed, None)
        latency_pruned = median_seconds(lambda: compressed(batch), config.repeats)
        _set_quantizers(compressed, bits)

        search = SearchModel(model, graph, calibration)
        mixed = Plan.uniform(graph.spec, prune=0.25, w_bits=4, a_bits=6)
        slow_repeats = max(1, config.repeats // 2)
        forward = median_seconds(lambda: accuracy(model, data, labels), slow_repeats, warmup=1)
        evaluation = median_seconds(lambda: accuracy(search.apply(mixed), data, labels), slow_repeats, warmup=1)
    finally:
        torch.set_num_threads(previous_threads)
    return CoreBenchResult(
        params_original=sum(p.numel() for p in model.parameters()),
        params_pruned=sum(p.numel() for p in compressed.parameters()),
        latency_original_ms=latency_original * 1e3,
        latency_pruned_ms=latency_pruned * 1e3,
        latency_pruned_simulated_ms=latency_simulated * 1e3,
        speedup=latency_original / latency_pruned,
        forward_search_split_ms=forward * 1e3,
        search_evaluation_ms=evaluation * 1e3,
        evaluation_over_forward=evaluation / forward,
    )

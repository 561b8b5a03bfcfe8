"""Patterns of public model code that broke a stage: a language model's head tied to its
embedding, a layer whose output never reaches the model output (WaveNet's last residual conv
when only the skips are read), a PixelShuffle (ESPCN super-resolution) after a conv, 3-D
convolutions (C3D / R(2+1)D video and volume classifiers) and transposed convolutions (U-Net
decoders, Conv-TasNet's 1-D decoder), GPT-2's input-major ``Conv1D`` projections, a
Conformer's GLU-gated convolution module, attention that stores its head count (timm,
vit-pytorch, transformers) and ReXNet's partial residual."""

from __future__ import annotations

from fractions import Fraction

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors import SearchModel, build_graph, count_params
from metacompress.compressors.attention import follow_pruned_heads
from metacompress.compressors.cost import layer_shapes
from metacompress.compressors.export import load_compressed
from metacompress.compressors.onnx_export import export_onnx, onnx_agreement
from metacompress.compressors.transposed_conv import OutputMajorConvTranspose
from metacompress.envs.evaluator import ModelEvaluator
from metacompress.envs.probes import hessian_traces


class TiedLM(nn.Module):
    """Embedding, a residual MLP, and an output head sharing the embedding's weight."""

    def __init__(self, vocab: int = 24, width: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.mix = nn.Sequential(nn.Linear(width, 32), nn.GELU(), nn.Linear(32, width))
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        return self.head((h + self.mix(h)).mean(1))


class GatedSkips(nn.Module):
    """WaveNet-style gated dilated convs; the last block's residual conv feeds nothing."""

    def __init__(self, width: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, width, 1)
        self.filt = nn.ModuleList(nn.Conv1d(width, width, 2, dilation=2**i) for i in range(blocks))
        self.res = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(blocks))
        self.skip = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(blocks))
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.inp(x), 0
        for i, (f, r, s) in enumerate(zip(self.filt, self.res, self.skip)):
            z = torch.tanh(f(F.pad(x, (2**i, 0))))
            x, skips = x + r(z), skips + s(z)
        return self.out(F.relu(skips).mean(-1))


class PixelShuffleNet(nn.Module):
    """ESPCN's sub-pixel upsampling: 4 channels rearranged into a 2x larger single-channel map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 8, 3, padding=1)
        self.subpixel = nn.Conv2d(8, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.classify = nn.Sequential(nn.Conv2d(1, 6, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.shuffle(torch.tanh(self.subpixel(torch.tanh(self.features(x))))))


def labelled(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return mc.splits_from_arrays(x, model(x).argmax(-1))


def test_a_tied_head_is_quantized_per_vocabulary_row_which_its_table_reads_and_saves_reloads_and_exports_once(tmp_path):
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids = torch.randint(0, 24, (120, 6), generator=torch.Generator().manual_seed(0))
    data = labelled(model, ids)
    spec = mc.analyze(model, ids[:8])
    assert not spec.unsupported and [layer.name for layer in spec.layers] == ["mix.0", "mix.2", "head"]  # the table is no layer
    head = next(unit for unit in spec.units if unit.layers == ("head",))
    assert head.frozen and spec.fixed_fp32_params == 0  # the shared table is counted once, at the head's 8 bits
    mlp = next(unit for unit in spec.units if unit.layers == ("mix.0",))
    assert mlp.prunable, mlp.reason  # the tied head runs in eval mode too: not a training-only head (as until v0.12)
    result = mc.compress(model, ids[:8], data, hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    assert result.summary["within_budget"]
    assert model.head.weight is model.emb.weight  # the user's model keeps its tie
    compressed = result.model
    assert compressed.head.weight is compressed.emb.weight and "head" in compressed.metacompress_weight_bits
    scale = compressed.head.weight_scale[:, None]
    assert torch.equal(compressed.emb.weight, scale * torch.round(compressed.emb.weight / scale))  # the table reads the codes

    mc.save_compressed(result.model, tmp_path / "model")  # safetensors refuses a tensor stored twice
    fresh = TiedLM()
    again = mc.load_compressed(tmp_path / "model", fresh)
    with torch.no_grad():
        assert torch.equal(again(ids), result.model(ids))
    assert again.head.weight is again.emb.weight

    path = export_onnx(result.model, tmp_path / "tied.onnx", ids[:8])  # the shared table once: the head's int8 codes
    tables = [init for init in onnx.load(str(path)).graph.initializer if 24 in init.dims and len(init.dims) == 2]
    assert [(init.name, init.data_type) for init in tables] == [("head.weight_codes", onnx.TensorProto.INT8)]
    agreement = onnx_agreement(result.model, path, data.test.x, data.test.y)
    assert abs(agreement["difference_points"]) <= 100 / len(data.test.y) + 1e-9


def test_a_layer_that_feeds_nothing_has_zero_curvature_and_the_model_compresses():
    torch.manual_seed(0)
    model = GatedSkips().eval()
    x = torch.randn(120, 1, 16, generator=torch.Generator().manual_seed(0))
    data = labelled(model, x)
    evaluator = ModelEvaluator(model, data)
    dead = next(u.index for u in evaluator.spec.units if "res.1" in u.layers)
    for estimator in ("exact", "finite-difference"):
        traces, _ = hessian_traces(evaluator, samples=2, estimator=estimator)
        assert traces[dead] == 0.0 and all(t != 0.0 for i, t in enumerate(traces) if i != dead), estimator
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    assert result.summary["within_budget"]


def test_the_conv_before_a_pixel_shuffle_is_quantize_only_and_the_solver_prices_it():
    torch.manual_seed(0)
    model = PixelShuffleNet().eval()
    x = torch.randn(120, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = labelled(model, x)
    spec = mc.analyze(model, x[:8])
    subpixel = next(u for u in spec.units if "subpixel" in u.layers)
    assert not subpixel.prunable  # its channels are rearranged into space, not kept as channels
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)  # HAWQ's removal terms once indexed past the shuffled input
    assert result.summary["within_budget"]
    assert result.model.subpixel.out_channels == 4


def test_one_layer_registered_under_two_paths_is_shared_not_tied_and_reloads(tmp_path):
    """TabNet registers each shared GLU Linear in two ModuleLists: one layer, compressed once."""

    class Aliased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(8, 8)
            self.steps = nn.ModuleList([self.shared, nn.Linear(8, 8)])
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for step in self.steps:
                x = torch.relu(step(x))
            return self.head(self.shared(x))

    torch.manual_seed(0)
    model = Aliased().eval()
    x = torch.randn(120, 8, generator=torch.Generator().manual_seed(0))
    spec = mc.analyze(model, x[:8])
    assert spec.unsupported == ()
    assert "shared" in {layer.name for layer in spec.layers}
    result = mc.compress(model, x[:8], labelled(model, x), hardware="m7-mcu", budget="bitops=0.4", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    mc.save_compressed(result.model, tmp_path / "model")  # the layer's codes are stored once, under its first path
    torch.manual_seed(1)
    again = mc.load_compressed(tmp_path / "model", Aliased())
    with torch.no_grad():
        assert torch.equal(again(x), result.model(x))


class VolumeNet(nn.Module):
    """C3D-style 3x3x3 convs with BatchNorm3d, then an R(2+1)D-style spatial depthwise and a temporal conv."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
            nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1), groups=16), nn.Conv3d(16, 16, (3, 1, 1), padding=(1, 0, 0)),
            nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyUNet(nn.Module):
    """One U-Net level: a strided conv down, a ConvTranspose2d up (sized by ``output_size``), a skip concat."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        return self.head(self.dec(torch.cat([skip, self.up(self.down(skip), output_size=skip.shape[-2:])], 1)))


class WaveDecoder(nn.Module):
    """Conv-TasNet-style 1-D encoder and overlap-add decoder (ConvTranspose1d, stride half the kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv1d(1, 16, 8, stride=4, bias=False)
        self.mask = nn.Sequential(nn.ReLU(), nn.Conv1d(16, 16, 1), nn.Sigmoid())
        self.decoder = nn.ConvTranspose1d(16, 2, 8, stride=4, bias=False)
        self.head = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return self.head(self.decoder(h * self.mask(h)).mean(-1))


def export_agrees_with_search_mode(model: nn.Module, graph, x: torch.Tensor) -> nn.Module:
    """Half of every prunable unit's channels removed at W4A6: export equals search mode and is as small as counted."""
    plan = mc.Plan.uniform(graph.spec, prune=0.5, w_bits=4, a_bits=6)
    searched = SearchModel(model, graph, [x]).apply(plan)(x)
    exported = mc.export(model, plan, x, [x], graph=graph)
    assert (exported(x) - searched).abs().max().item() < 1e-4
    assert sum(p.numel() for p in exported.parameters()) == count_params(graph.spec, plan.kept)
    return exported


def compresses_reloads_and_agrees_in_onnx(model: nn.Module, make, x: torch.Tensor, tmp_path, budget: str = "size=0.5"):
    """The whole pipeline on a pattern: a plan within budget touching every layer, reloaded exactly, ONNX to the point."""
    with torch.no_grad():
        data = mc.splits_from_arrays(x.numpy(), model(x).argmax(1).numpy())
    result = mc.compress(model, x[:8], data, hardware="m7-mcu", budget=budget, planner=HawqPlanner(), finetune_steps=5, seed=0)
    assert result.summary["within_budget"] and not result.summary["untouched_layers"]
    result.save(tmp_path / "run")
    assert torch.allclose(load_compressed(tmp_path / "run" / "model", make())(x), result.model(x), atol=1e-6)
    agreement = onnx_agreement(result.model, export_onnx(result.model, tmp_path / "m.onnx", x[:2]), x, result.model(x).argmax(1))
    assert agreement["difference_points"] == 0
    return result


@pytest.mark.parametrize("name", ["VolumeNet", "TinyUNet", "WaveDecoder"])
def test_3d_and_transposed_convolutions_are_pruned_quantized_and_agree_from_masks_to_onnx(tmp_path, name):
    torch.manual_seed(0)
    make, shape = {"VolumeNet": (VolumeNet, (1, 4, 8, 8)), "TinyUNet": (TinyUNet, (1, 8, 8)), "WaveDecoder": (WaveDecoder, (1, 64))}[name]
    model, x = make().eval(), torch.randn(96, *shape)
    graph = build_graph(model, x)
    assert not graph.spec.unsupported and any(u.prunable for u in graph.spec.units)
    if name == "VolumeNet":
        assert graph.spec.layers[0].macs(1, 8) == 4 * 8 * 8 * 8 * 27  # D*H*W positions x 3x3x3 kernel
    if name == "TinyUNet":  # a transposed conv applies its kernel at each input position: 4x4 x 16 in x 8 out x 2x2
        up = next(layer for layer in graph.spec.layers if layer.name == "up")
        assert up.transposed and up.macs(16, 8) == 16 * 16 * 8 * 4
    export_agrees_with_search_mode(model, graph, x)
    compresses_reloads_and_agrees_in_onnx(model, make, x, tmp_path)
    assert not any(isinstance(m, OutputMajorConvTranspose) for m in model.modules())  # the user's model keeps its layers


def test_grouped_and_depthwise_transposed_convs_are_quantized_not_pruned_and_agree_to_onnx(tmp_path):
    def make() -> nn.Module:
        return nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.ConvTranspose1d(8, 8, 4, stride=2, groups=2), nn.ReLU(),
                             nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1, groups=8), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                             nn.Linear(8, 3))

    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(96, 1, 16)
    graph = build_graph(model, x)
    assert not graph.spec.unsupported
    grouped = [next(u for u in graph.spec.units if name in u.layers) for name in ("2", "4")]
    assert not any(u.prunable for u in grouped)
    depthwise = next(layer for layer in graph.spec.layers if layer.name == "4")
    assert depthwise.kind == "depthwise" and depthwise.macs(8, 8) == 30 * 8 * 4  # 30 input positions x 8 channels x kernel 4
    result = compresses_reloads_and_agrees_in_onnx(model, make, x, tmp_path, budget="size=0.8")
    assert {"2", "4"} <= set(result.model.metacompress_weight_bits)


class Conv1D(nn.Module):
    """transformers' GPT-2 projection (``transformers.pytorch_utils.Conv1D``): ``x @ weight + bias``, weight (nx, nf)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(x.size()[:-1] + (self.nf,))


class GPTBlockClassifier(nn.Module):
    """A GPT-2 MLP block over token embeddings (c_fc, GELU, c_proj, residual), mean-pooled into a head."""

    def __init__(self, vocab: int = 50, width: int = 16) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.c_fc, self.c_proj = Conv1D(4 * width, width), Conv1D(width, 4 * width)
        self.head = nn.Linear(width, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.wte(ids)
        return self.head((h + self.c_proj(F.gelu(self.c_fc(h)))).mean(1))


def test_gpt2_input_major_projections_are_compressed_as_linears_and_the_users_model_keeps_them(tmp_path):
    torch.manual_seed(0)
    model = GPTBlockClassifier().eval()
    ids = torch.randint(0, 50, (120, 8), generator=torch.Generator().manual_seed(0))
    spec = mc.analyze(model, ids[:8])
    assert [layer.name for layer in spec.layers] == ["wte", "c_fc", "c_proj", "head"] and not spec.unsupported
    assert spec.layers[1].kind == "linear" and spec.units[1].layers == ("c_fc",) and spec.units[1].prunable
    result = mc.compress(model, ids[:8], labelled(model, ids), hardware="m7-mcu", budget="size=0.3", planner=HawqPlanner(),
                         finetune_steps=5, seed=0)
    assert result.summary["within_budget"] and isinstance(model.c_fc, Conv1D)
    assert isinstance(result.model.c_fc, nn.Linear) and result.model.c_fc.out_features == result.plan.decisions[1].kept_channels
    mc.save_compressed(result.model, tmp_path / "model")
    again = mc.load_compressed(tmp_path / "model", GPTBlockClassifier())
    with torch.no_grad():
        assert torch.equal(again(ids), result.model(ids))


class FunctionalGLU(nn.Module):
    """``F.glu`` called in forward code (fairseq's and ESPnet's style), not the ``nn.GLU`` module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


class ConformerConv(nn.Module):
    """A Conformer block's convolution module (torchaudio's and ESPnet's layout): LayerNorm, a pointwise
    conv to twice the width, a GLU over the channels, a depthwise conv, BatchNorm, SiLU, a
    pointwise conv back, added to the residual stream."""

    def __init__(self, width: int = 8, inner: int = 12, functional: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv1d(4, width, 3, padding=1)
        self.norm = nn.LayerNorm(width)
        self.module = nn.Sequential(nn.Conv1d(width, 2 * inner, 1), FunctionalGLU() if functional else nn.GLU(dim=1),
                                    nn.Conv1d(inner, inner, 5, padding=2, groups=inner), nn.BatchNorm1d(inner), nn.SiLU(),
                                    nn.Conv1d(inner, width, 1))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.module(self.norm(h.transpose(1, 2)).transpose(1, 2))
        return self.head(h.mean(-1))


@pytest.mark.parametrize("functional", [False, True], ids=["nn.GLU", "F.glu"])
def test_a_glu_gated_conv_prunes_both_halves_of_its_input_with_its_channels(tmp_path, functional):
    torch.manual_seed(0)
    model, x = ConformerConv(functional=functional).eval(), torch.randn(96, 4, 16)
    graph = build_graph(model, x)
    gated = next(u for u in graph.spec.units if "module.0" in u.layers)
    assert gated.prunable and gated.layers == ("module.0", "module.2") and gated.channels == 12
    widen = next(layer for layer in graph.spec.layers if layer.name == "module.0")
    assert widen.out_per_channel == 2 and widen.kept_out([8, 5, 3]) == 10  # 5 gate channels need 5 of each half
    exported = export_agrees_with_search_mode(model, graph, x)
    assert (exported.module[0].out_channels, exported.module[2].in_channels) == (12, 6)  # 6 of 12 gate channels kept, 2 x 6 inputs
    compresses_reloads_and_agrees_in_onnx(model, lambda: ConformerConv(functional=functional).eval(), x, tmp_path)


class PackedSwiGLU(nn.Module):
    """Phi-3's MLP: one packed gate-and-up Linear chunked over the last axis, SiLU(gate) * up, then down."""

    def __init__(self, width: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.embed, self.gate_up = nn.Linear(8, width), nn.Linear(width, 2 * hidden)
        self.down, self.head = nn.Linear(hidden, width), nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.head((h + self.down(F.silu(gate) * up)).mean(1))


def test_a_packed_gate_and_up_projection_prunes_hidden_unit_c_of_both_halves():
    torch.manual_seed(0)
    model, x = PackedSwiGLU().eval(), torch.randn(64, 5, 8)
    graph = build_graph(model, x[:8])
    unit = next(u for u in graph.spec.units if u.layers == ("gate_up",))
    assert unit.prunable and unit.channels == 32
    assert next(layer for layer in graph.spec.layers if layer.name == "gate_up").out_per_channel == 2
    exported = export_agrees_with_search_mode(model, graph, x)
    assert exported.gate_up.out_features == 32 and exported.down.in_features == 16


class WaveNetBlock(nn.Module):
    """WaveNet's gated residual unit as its public implementations write it: an unpadded dilated conv to
    twice the width, the gate cut by slicing (``tanh(h[:, :c]) * sigmoid(h[:, c:])``), a 1x1 conv back,
    and the residual cropped in time to the shorter output (``x[:, :, 4:]``)."""

    def __init__(self, width: int = 8, inner: int = 12) -> None:
        super().__init__()
        self.embed = nn.Conv1d(2, width, 3, padding=1)
        self.dilated = nn.Conv1d(width, 2 * inner, 3, dilation=2)
        self.back = nn.Conv1d(inner, width, 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x))
        g = self.dilated(h)
        inner = g.shape[1] // 2
        h = h[:, :, 4:] + self.back(torch.tanh(g[:, :inner]) * torch.sigmoid(g[:, inner:]))
        return self.head(h.mean(-1))


class SlicedGLUTabular(nn.Module):
    """TabNet's gated block on (N, F) features: ``x[:, :d] * sigmoid(x[:, d:])`` after a Linear to 2d."""

    def __init__(self, features: int = 10, width: int = 12) -> None:
        super().__init__()
        self.fc = nn.Linear(features, 2 * width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc(x)
        return self.head(g[:, : g.shape[1] // 2] * torch.sigmoid(g[:, g.shape[1] // 2 :]))


@pytest.mark.parametrize("make, shape", [(WaveNetBlock, (2, 21)), (SlicedGLUTabular, (10,))], ids=["wavenet", "tabnet-glu"])
def test_slices_of_the_channels_prune_as_one_gate_and_slices_in_time_leave_channels_alone(tmp_path, make, shape):
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(96, *shape)
    graph = build_graph(model, x[:8])
    gated_layer = "dilated" if make is WaveNetBlock else "fc"
    gated = next(u for u in graph.spec.units if gated_layer in u.layers)
    assert gated.prunable and gated.channels == 12
    assert next(layer for layer in graph.spec.layers if layer.name == gated_layer).out_per_channel == 2
    if make is WaveNetBlock:  # the cropped residual stream prunes with the convs that write it
        assert next(u for u in graph.spec.units if "embed" in u.layers).prunable
    exported = export_agrees_with_search_mode(model, graph, x)
    assert getattr(exported, gated_layer).weight.shape[0] == 12  # 6 of 12 gate channels, both halves
    compresses_reloads_and_agrees_in_onnx(model, lambda: make().eval(), x, tmp_path)


def window_attention(x: torch.Tensor, qkv_weight, proj_weight, heads: int, qkv_bias=None, proj_bias=None) -> torch.Tensor:
    """torchvision's ``shifted_window_attention``, reduced: a free function running the weights it is handed."""
    n, t, c = x.shape
    q, k, v = F.linear(x, qkv_weight, qkv_bias).reshape(n, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    x = ((q @ k.transpose(-2, -1) * (c // heads) ** -0.5).softmax(-1) @ v).transpose(1, 2).reshape(n, t, c)
    return F.linear(x, proj_weight, proj_bias)


class SwinAttention(nn.Module):
    """torchvision's Swin attention: its ``qkv`` and ``proj`` Linears never run, their weights are read."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_attention(x, self.qkv.weight, self.proj.weight, self.heads, qkv_bias=self.qkv.bias, proj_bias=self.proj.bias)


class BeitAttention(nn.Module):
    """timm's BEiT/EVA attention: ``F.linear`` on the bias-free ``qkv``'s weight with q and v biases of its own."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)
        self.q_bias, self.v_bias = nn.Parameter(torch.randn(dim) * 0.1), nn.Parameter(torch.randn(dim) * 0.1)
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        qkv = F.linear(x, weight=self.qkv.weight, bias=torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(n, t, c))


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """transformers' Mamba ``causal_conv1d_fn`` reference: the conv's weight handed in as a (C, K) view."""
    return F.conv1d(x, weight.unsqueeze(1), bias, padding=weight.shape[-1] - 1, groups=x.shape[1])[:, :, : x.shape[-1]]


class MambaLikeMixer(nn.Module):
    """transformers' Mamba mixer's two reads: its depthwise conv's weight as a view, ``dt_proj.weight @ x``."""

    def __init__(self, dim: int = 16, inner: int = 24, rank: int = 4) -> None:
        super().__init__()
        self.in_proj, self.conv1d = nn.Linear(dim, inner), nn.Conv1d(inner, inner, 3, groups=inner, padding=2)
        self.x_proj, self.dt_proj, self.out_proj = nn.Linear(inner, rank), nn.Linear(rank, inner), nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = causal_depthwise_conv(self.in_proj(x).transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias)
        gate = self.dt_proj.weight @ self.x_proj(h.transpose(1, 2)).transpose(1, 2)  # (N, inner, T)
        return self.out_proj((F.silu(h) * torch.sigmoid(gate + self.dt_proj.bias[:, None])).transpose(1, 2))


class PatchAttentionNet(nn.Module):
    def __init__(self, attention: type[nn.Module], dim: int = 16) -> None:
        super().__init__()
        self.embed, self.attn, self.norm = nn.Conv2d(1, dim, 2, 2), attention(dim, 2), nn.LayerNorm(dim)
        self.mlp, self.head = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim)), nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(2).transpose(1, 2)
        h = h + self.attn(self.norm(h))
        return self.head((h + self.mlp(self.norm(h))).mean(1))


@pytest.mark.parametrize("attention", [SwinAttention, BeitAttention, MambaLikeMixer], ids=["swin", "beit", "mamba"])
def test_layers_a_parent_reads_in_its_forward_are_quantized_as_layers_and_the_users_model_keeps_its_forward(tmp_path, attention):
    torch.manual_seed(0)
    model, x = PatchAttentionNet(attention).eval(), torch.randn(96, 1, 8, 8)
    read = {SwinAttention: ("proj", "qkv"), BeitAttention: ("qkv",), MambaLikeMixer: ("conv1d", "dt_proj")}[attention]
    spec = mc.analyze(model, x[:8])
    assert spec.routes == (("attn", read),) and not spec.unsupported
    assert {f"attn.{layer}" for layer in read} <= {layer.name for layer in spec.layers}
    assert "forward" not in model.attn.__dict__  # routed in private copies only
    if attention is SwinAttention:  # its head width is x.shape[-1] // heads: the stream cannot be pruned without qkv
        assert not spec.units[0].prunable and "another unit's layers read its width" in spec.units[0].reason
    with torch.no_grad():
        expected = model(x)
    export_agrees_with_search_mode(model, build_graph(model, x[:8]), x)
    result = compresses_reloads_and_agrees_in_onnx(model, lambda: PatchAttentionNet(attention).eval(), x, tmp_path)
    bits = {layer: result.model.metacompress_weight_bits[f"attn.{layer}"] for layer in read}  # every one quantized
    layer = result.model.attn.get_submodule(min(bits, key=bits.get))
    scale = layer.weight_scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1))
    assert torch.equal(layer.weight, scale * torch.round(layer.weight / scale))  # on its lattice
    with torch.no_grad():
        assert torch.equal(model(x), expected)


class PositionBiasMLP(nn.Module):
    """Swin-V2's continuous position bias: an MLP run on a constant coordinate table (a buffer), its output added."""

    def __init__(self, width: int = 16, tokens: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, width, 2, 2)
        self.register_buffer("coords", torch.linspace(-1, 1, tokens * 2).reshape(tokens, 2))
        self.position_mlp = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, width))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(2).transpose(1, 2) + self.position_mlp(self.coords)
        return self.head(torch.relu(h).mean(1))


def test_a_layer_whose_input_is_a_constant_keeps_its_activation_quantizer_in_onnx(tmp_path):
    torch.manual_seed(0)
    model, x = PositionBiasMLP().eval(), torch.randn(96, 1, 8, 8)
    # the coordinate table's QuantizeLinear was folded as if it were a weight, under the buffer's own name: the graph
    # then held two initializers of that name, which the ONNX checker refused
    result = compresses_reloads_and_agrees_in_onnx(model, lambda: PositionBiasMLP().eval(), x, tmp_path)
    assert hasattr(result.model.position_mlp[0], "input_quantizer") and "position_mlp.0" in result.model.metacompress_weight_bits


class StdConv2d(nn.Conv2d):
    """timm's ``StdConv2d`` (BiT ResNetV2; transformers' BiT has the same ``WeightStandardizedConv2d``):
    it standardizes its weight per output channel at every call and convolves with that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0,
                              eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StandardizedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.norm = StdConv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv, self.head = StdConv2d(16, 24, 3, stride=2, padding=1), nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.stem(x)))
        return self.head(torch.relu(self.conv(h)).mean((2, 3)))


def test_a_weight_standardized_conv_runs_its_quantized_weight_folded_not_a_standardization_of_it(tmp_path):
    torch.manual_seed(0)
    model, x = StandardizedNet().eval(), torch.randn(96, 1, 8, 8)
    spec = mc.analyze(model, x[:8])
    assert spec.folds == (("conv", (16, 8, 8)), ("stem", (1, 8, 8)))
    with torch.no_grad():
        expected = model(x)
    export_agrees_with_search_mode(model, build_graph(model, x[:8]), x)
    result = compresses_reloads_and_agrees_in_onnx(model, lambda: StandardizedNet().eval(), x, tmp_path, budget="bitops=0.3")
    conv = result.model.conv
    assert result.model.metacompress_weight_bits["conv"] < 8
    assert torch.equal(conv.weight, conv.weight_scale[:, None, None, None] * torch.round(conv.weight / conv.weight_scale[:, None, None, None]))
    h = torch.randn(4, conv.in_channels, 8, 8)
    with torch.no_grad():  # the conv runs the stored weight (quantized, on its lattice), not a standardization of it
        assert torch.allclose(conv(h), F.conv2d(conv.input_quantizer(h), conv.weight, conv.bias, conv.stride, conv.padding), atol=1e-5)
        assert torch.equal(model(x), expected) and "forward" not in model.conv.__dict__


class TimmAttention(nn.Module):
    """timm's ``Attention`` (ViT, DeiT, PiT): a fused qkv reshaped by its stored head count, fused SDPA,
    the heads joined back to its stored ``attn_dim``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.attn_dim = heads * self.head_dim
        self.qkv, self.proj = nn.Linear(dim, 3 * self.attn_dim), nn.Linear(self.attn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, self.attn_dim))


class QKNormAttention(TimmAttention):
    """timm's ``Attention(qk_norm=True)`` (Qwen3's and Gemma 3's attention do the same with an RMSNorm): a LayerNorm
    over the head width normalises each head of q and k on its own, so whole heads leave it whole."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.q_norm, self.k_norm = nn.LayerNorm(self.head_dim), nn.LayerNorm(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(n, t, self.attn_dim))


class ChunkedHeadsAttention(nn.Module):
    """vit-pytorch's ``Attention``: ``to_qkv(x).chunk(3)``, each split into ``self.heads`` heads."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv, self.to_out = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = (part.view(n, t, self.heads, -1).transpose(1, 2) for part in self.to_qkv(x).chunk(3, dim=-1))
        out = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(n, t, -1))


class SeparateHeadsAttention(nn.Module):
    """transformers' (v4) ``BertSelfAttention`` with its output projection: views by ``num_attention_heads``
    and ``all_head_size``, which transformers' own ``prune_heads`` rewrites."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, dim // heads
        self.all_head_size = heads * self.attention_head_size
        self.query, self.key, self.value = (nn.Linear(dim, self.all_head_size) for _ in range(3))
        self.dense = nn.Linear(self.all_head_size, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = (layer(x).view(n, t, self.num_attention_heads, self.attention_head_size).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))
        out = ((q @ k.transpose(-2, -1)) / self.attention_head_size**0.5).softmax(-1) @ v
        return self.dense(out.transpose(1, 2).reshape(n, t, self.all_head_size))


HEAD_COUNTS = {TimmAttention: ("num_heads", "attn_dim"), ChunkedHeadsAttention: ("heads",),
               SeparateHeadsAttention: ("num_attention_heads", "all_head_size"), QKNormAttention: ("num_heads", "attn_dim")}


@pytest.mark.parametrize("attention", list(HEAD_COUNTS), ids=["timm", "vit-pytorch", "transformers", "timm-qk-norm"])
def test_heads_an_attention_counts_in_its_attributes_are_pruned_whole_and_its_counts_follow(tmp_path, attention):
    torch.manual_seed(0)
    make = lambda: PatchAttentionNet(lambda dim, heads: attention(dim, 4), dim=32).eval()  # noqa: E731: heads of 8
    model, x = make(), torch.randn(96, 1, 8, 8)
    graph = build_graph(model, x[:8])
    heads_unit = next(u for u in graph.spec.units if u.name.startswith("attn."))
    assert heads_unit.prunable and heads_unit.channels == 32 and heads_unit.channel_step == 8  # whole heads of 8
    exported = export_agrees_with_search_mode(model, graph, x)
    counts = HEAD_COUNTS[attention]
    assert [getattr(exported.attn, a) for a in counts] == [getattr(model.attn, a) // 2 for a in counts]  # half the heads
    assert all(getattr(model.attn, a) in (4, 32) for a in counts)  # the user's model keeps its own
    assert all(norm.weight.shape == (8,) for norm in (getattr(exported.attn, n, None) for n in ("q_norm", "k_norm")) if norm)  # per head
    mc.save_compressed(exported, tmp_path / "model")
    reloaded = load_compressed(tmp_path / "model", make())
    assert [getattr(reloaded.attn, a) for a in counts] == [getattr(exported.attn, a) for a in counts]
    assert torch.allclose(reloaded(x), exported(x), atol=1e-6)
    agreement = onnx_agreement(exported, export_onnx(exported, tmp_path / "m.onnx", x[:2]), x, exported(x).argmax(1))
    assert agreement["difference_points"] == 0


def test_only_a_unit_pruning_outputs_inside_an_attention_module_rescales_its_head_count():
    model = nn.Module()
    model.attn = TimmAttention(16, 4)
    follow_pruned_heads(model, [(["embed", "attn.proj", "mlp.fc2"], Fraction(1, 2))])  # the residual stream: writes outside too
    assert (model.attn.num_heads, model.attn.attn_dim) == (4, 16)
    follow_pruned_heads(model, [(["attn.qkv"], Fraction(1, 2)), (["embed", "attn.proj"], Fraction(3, 4))])  # half the heads, and the stream
    assert (model.attn.num_heads, model.attn.attn_dim, model.attn.head_dim) == (2, 8, 4)
    follow_pruned_heads(model, [(["attn.qkv"], Fraction(1, 2)), (["attn.proj"], Fraction(3, 4))])  # two units inside disagree
    assert (model.attn.num_heads, model.attn.attn_dim) == (2, 8)
    follow_pruned_heads(model, [(["attn.rel_pos.mlp.fc1"], Fraction(1, 2))])  # timm's relative-position MLP: inside, not its heads
    assert (model.attn.num_heads, model.attn.attn_dim) == (2, 8)


class WideningBlock(nn.Module):
    """ReXNet's widening inverted residual (Han et al. 2021): the shortcut is added to the first
    ``cin`` of its ``cout`` channels only, ``cat([x[:, :cin] + shortcut, x[:, cin:]])``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cin, hidden = cin, 4 * cin
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.dw(self.expand(x)))
        return torch.cat([out[:, : self.cin] + x, out[:, self.cin :]], dim=1)


class ReXNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(WideningBlock(16, 20), WideningBlock(20, 24))
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_partial_residual_counts_the_channels_past_its_unit_in_every_layer_shape(tmp_path):
    torch.manual_seed(0)
    model, x = ReXNetLike().eval(), torch.randn(96, 1, 8, 8)
    graph = build_graph(model, x[:8])
    spec = graph.spec
    fixed = {layer.name: layer.out_fixed for layer in spec.layers if layer.out_fixed}
    assert fixed == {"blocks.0.project.0": 4, "blocks.1.project.0": 8}  # past the stem's 16 channels the residuals carry
    shapes = dict(zip((layer.name for layer in spec.layers), layer_shapes(spec, spec.full_kept)))
    for name, (kept_in, kept_out) in shapes.items():  # every layer's unpruned shape as it is (MACs, latency, size)
        layer = model.get_submodule(name)
        assert (kept_in, kept_out) == (getattr(layer, "in_channels", getattr(layer, "in_features", None)),
                                       getattr(layer, "out_channels", getattr(layer, "out_features", None)))
    assert count_params(spec, spec.full_kept) == spec.total_params
    export_agrees_with_search_mode(model, graph, x)  # the pruned model's parameters as counted, too


class ScaledStdConv2d(nn.Conv2d):
    """timm's NF-Net conv (Brock et al. 2021): weights standardized per filter through ``F.batch_norm``,
    times a learned per-filter ``gain`` the layer owns."""

    def __init__(self, cin: int, cout: int, kernel: int, **kwargs) -> None:
        super().__init__(cin, cout, kernel, **kwargs)
        self.gain = nn.Parameter(torch.rand(cout, 1, 1, 1) + 0.5)
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, weight=(self.gain * self.scale).view(-1),
                              training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NormFreeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = ScaledStdConv2d(1, 16, 3, padding=1), ScaledStdConv2d(16, 24, 3, stride=2, padding=1)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.conv(F.gelu(self.stem(x)))).mean((2, 3)))


def test_a_standardized_conv_with_its_own_per_filter_gain_prunes_the_gain_with_its_filters(tmp_path):
    torch.manual_seed(0)
    model, x = NormFreeNet().eval(), torch.randn(96, 1, 8, 8)
    graph = build_graph(model, x[:8])
    assert [u.prunable for u in graph.spec.units] == [True, True, False]  # the head is the model output
    exported = export_agrees_with_search_mode(model, graph, x)  # the parameters as counted, gains included
    assert exported.conv.gain.shape == (12, 1, 1, 1) and model.conv.gain.shape == (24, 1, 1, 1)
    compresses_reloads_and_agrees_in_onnx(model, lambda: NormFreeNet().eval(), x, tmp_path, budget="bitops=0.3")

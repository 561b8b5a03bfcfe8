"""Model families: every zoo (family, dataset, knobs) builds and runs; the conventions the
compressor relies on (``head``, allowed modules, whole-head attention) hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metacompress.envs.zoo.training import module_macs, module_params
from metacompress.envs.zoo.datasets import DATASETS
from metacompress.envs.zoo.families import FAMILIES, Attention, build_model
from metacompress.envs.zoo.catalog import ZOO
from metacompress.errors import UnknownName, UnsupportedModel

ALLOWED = (
    nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.ReLU, nn.ReLU6, nn.GELU,
    nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity,
)


@pytest.mark.parametrize("entry", ZOO, ids=[e.id for e in ZOO])
def test_every_zoo_model_runs_on_its_dataset_and_keeps_the_conventions(entry):
    torch.manual_seed(0)
    model = build_model(entry.family, entry.input_shape, entry.num_classes, entry.width, entry.depth).eval()
    with torch.no_grad():
        out = model(torch.randn(3, *entry.input_shape))
    assert out.shape == (3, entry.num_classes) and torch.isfinite(out).all()
    assert isinstance(model.head, nn.Linear) and model.head.out_features == entry.num_classes
    for name, module in model.named_modules():
        if not list(module.children()):
            assert isinstance(module, ALLOWED), f"{name} is a {type(module).__name__}"
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1:
            assert module.groups == module.in_channels == module.out_channels, f"{name} is grouped, not depthwise"
        assert not getattr(module, "inplace", False), f"{name} works in place"


def test_families_cover_six_architectures_and_derive_their_datasets_from_input_kinds():
    assert {"mlp", "cnn1d", "vgg", "resnet", "mobilenetv2", "transformer"} <= set(FAMILIES)
    assert FAMILIES["cnn1d"].datasets == ("mnist1d",)
    assert FAMILIES["resnet"].datasets == ("digits", "mnist", "shapes")
    assert FAMILIES["transformer"].datasets == tuple(DATASETS)


def test_params_and_macs_by_hand_for_a_small_mlp():
    model = build_model("mlp", (1, 8, 8), 10, width=8, depth=1)
    # Linear 64->8 (+bias), BatchNorm1d(8) weight+bias, head 8->10 (+bias)
    assert module_params(model) == 64 * 8 + 8 + 2 * 8 + 8 * 10 + 10
    assert module_macs(model, (1, 8, 8)) == 64 * 8 + 8 * 10


def test_resnet_projects_the_shortcut_only_where_shapes_change():
    model = build_model("resnet", (3, 16, 16), 10, width=8, depth=2)
    kinds = [type(block.shortcut).__name__ for block in model.blocks]
    assert kinds == ["Identity", "Identity", "Sequential", "Identity", "Sequential", "Identity"]


def test_mobilenetv2_adds_the_residual_only_when_shapes_match():
    model = build_model("mobilenetv2", (1, 14, 14), 10, width=8, depth=2)
    assert [block.residual for block in model.blocks] == [True, True, False, True, False, True]
    depthwise = model.blocks[0].depthwise[0]
    assert depthwise.groups == depthwise.in_channels == 32  # expansion 4


def _keep_heads(attn: Attention, heads: int) -> None:
    """Prune ``attn`` to its first ``heads`` heads, as Torch-Pruning would."""
    width = heads * attn.head_dim
    for name in ("q", "k", "v"):
        old = getattr(attn, name)
        new = nn.Linear(old.in_features, width)
        new.weight.data, new.bias.data = old.weight.data[:width].clone(), old.bias.data[:width].clone()
        setattr(attn, name, new)
    new_o = nn.Linear(width, attn.o.out_features)
    new_o.weight.data, new_o.bias.data = attn.o.weight.data[:, :width].clone(), attn.o.bias.data.clone()
    attn.o = new_o


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 40)], ids=["image", "sequence"])
def test_transformer_derives_heads_from_q_so_whole_heads_can_be_pruned(input_shape):
    model = build_model("transformer", input_shape, 10, width=32, depth=2).eval()
    attn = model.blocks[0].attn
    assert attn.head_dim == 8 and attn.q.out_features // attn.head_dim == 4
    assert not any(isinstance(v, int) and "head" in k and k != "head_dim" for k, v in vars(attn).items())
    _keep_heads(attn, 2)
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, 10)


def test_transformer_patches_keep_tokens_bounded():
    tokens = {shape: build_model("transformer", shape, 10, 16, 1).pos_embed.shape[1]
              for shape in [(1, 8, 8), (1, 14, 14), (3, 16, 16), (1, 40)]}
    assert tokens == {(1, 8, 8): 16, (1, 14, 14): 49, (3, 16, 16): 16, (1, 40): 20}


def test_same_seed_same_initial_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model("vgg", (1, 8, 8), 10, 8, 1).state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])


def test_bad_family_and_shapes_raise_with_the_fix():
    with pytest.raises(UnknownName, match="did you mean resnet"):
        build_model("resnt", (1, 8, 8), 10, 8, 1)
    with pytest.raises(UnsupportedModel, match="needs sequence input"):
        build_model("cnn1d", (1, 8, 8), 10, 8, 1)
    with pytest.raises(UnsupportedModel, match="needs image input"):
        build_model("resnet", (1, 40), 10, 8, 1)
    with pytest.raises(UnsupportedModel, match="multiple of 8"):
        build_model("transformer", (1, 8, 8), 10, 12, 1)
    with pytest.raises(UnsupportedModel, match="width and depth must be >= 1"):
        build_model("mlp", (1, 8, 8), 10, 0, 1)

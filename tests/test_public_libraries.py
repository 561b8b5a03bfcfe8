"""Architectures from a public model library, as users bring them: transformers' own model classes.

Each is built from a tiny config (offline, random weights; nothing is downloaded) and goes
through the whole pipeline: analysis, a budgeted plan, export, save and reload, and ONNX.
They pinned six gaps: GPT-2's input-major ``Conv1D`` projections stayed fp32, Torch-Pruning's
tracer crashed on GPT-2's cache output, BERT's fp32 embedding tables made size budgets
below 0.80 infeasible, Whisper's encoder, which reads its position table's
``num_embeddings``, failed on the rewritten table, BiT's weight-standardized convs ran a
standardization of their quantized weight, and a masked LM's decoder tied to its token table
stayed fp32 with it. Their hidden width (LayerNorm-normalised, with position tables and a
class token) was quantize-only until v0.16, Llama's (normalised by a hand-written RMSNorm) until v0.17, and so
was every unit of BiT (a GroupNorm of 8 groups after every conv).
"""

from __future__ import annotations

import pytest
import torch
import transformers as hf

import metacompress as mc
from metacompress.agents import HawqPlanner
from metacompress.compressors import SearchModel, build_graph, count_params
from metacompress.compressors.metrics import logits
from metacompress.compressors.onnx_export import onnx_logits, session, to_onnx

VOCAB, TOKENS = 200, 12
TEXT = dict(vocab_size=VOCAB, num_labels=3)
IMAGE = dict(num_labels=3)

FACTORIES = {
    "gpt2": lambda: hf.GPT2ForSequenceClassification(hf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, pad_token_id=0,
                                                                   bos_token_id=1, eos_token_id=1, use_cache=False, **TEXT)),
    "bert": lambda: hf.BertForSequenceClassification(hf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                                   intermediate_size=64, max_position_embeddings=32, **TEXT)),
    "distilbert": lambda: hf.DistilBertForSequenceClassification(hf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                                     max_position_embeddings=32, **TEXT)),
    "vit": lambda: hf.ViTForImageClassification(hf.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                                             num_attention_heads=2, intermediate_size=64, **IMAGE)),
    "swin": lambda: hf.SwinForImageClassification(hf.SwinConfig(image_size=16, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2],
                                                                window_size=4, **IMAGE)),
    "resnet": lambda: hf.ResNetForImageClassification(hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **IMAGE)),
    "convnext": lambda: hf.ConvNextForImageClassification(hf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **IMAGE)),
    "wav2vec2": lambda: hf.Wav2Vec2ForSequenceClassification(hf.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2),
        conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, **IMAGE)),
    "regnet": lambda: hf.RegNetForImageClassification(hf.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                                      groups_width=4, **IMAGE)),
    "deit": lambda: hf.DeiTForImageClassification(hf.DeiTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                                                num_attention_heads=2, intermediate_size=64, **IMAGE)),
    "beit": lambda: hf.BeitForImageClassification(hf.BeitConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                                                num_attention_heads=2, intermediate_size=64, use_mean_pooling=True, **IMAGE)),
    "segformer": lambda: hf.SegformerForImageClassification(hf.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 2], mlp_ratios=[2, 2], **IMAGE)),
    "poolformer": lambda: hf.PoolFormerForImageClassification(hf.PoolFormerConfig(
        num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1], **IMAGE)),
    "levit": lambda: hf.LevitForImageClassification(hf.LevitConfig(
        image_size=16, hidden_sizes=[32, 48], num_attention_heads=[2, 3], depths=[1, 1], key_dim=[8, 8], mlp_ratio=[2, 2],
        attention_ratio=[2, 2], down_ops=[["Subsample", 8, 2, 2, 2, 2]], **IMAGE)),
    "albert": lambda: hf.AlbertForSequenceClassification(hf.AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                                                         num_attention_heads=2, intermediate_size=64,
                                                                         max_position_embeddings=32, **TEXT)),
    "electra": lambda: hf.ElectraForSequenceClassification(hf.ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                                                            num_attention_heads=2, intermediate_size=64,
                                                                            max_position_embeddings=32, **TEXT)),
    "mobilebert": lambda: hf.MobileBertForSequenceClassification(hf.MobileBertConfig(
        hidden_size=32, embedding_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, intra_bottleneck_size=16,
        true_hidden_size=16, max_position_embeddings=32, num_feedforward_networks=1, **TEXT)),
    "llama": lambda: hf.LlamaForSequenceClassification(hf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                                      num_key_value_heads=1, intermediate_size=64,
                                                                      max_position_embeddings=32, pad_token_id=0, use_cache=False, **TEXT)),
    "wav2vec2-conformer": lambda: hf.Wav2Vec2ConformerForSequenceClassification(hf.Wav2Vec2ConformerConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2),
        conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        conv_depthwise_kernel_size=3, **IMAGE)),
    "whisper": lambda: hf.WhisperForAudioClassification(hf.WhisperConfig(
        num_mel_bins=8, d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=8,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, **IMAGE)),
    "bit": lambda: hf.BitForImageClassification(hf.BitConfig(embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                                                             layer_type="preactivation", num_groups=8, **IMAGE)),
    "gemma": lambda: hf.GemmaForSequenceClassification(hf.GemmaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                                      num_key_value_heads=2, head_dim=16, intermediate_size=64,
                                                                      max_position_embeddings=32, pad_token_id=0, use_cache=False, **TEXT)),
    "qwen3": lambda: hf.Qwen3ForSequenceClassification(hf.Qwen3Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                                      num_key_value_heads=2, head_dim=16, intermediate_size=64,
                                                                      max_position_embeddings=32, pad_token_id=0, use_cache=False, **TEXT)),
    "gpt2-lm": lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                                         use_cache=False)),  # its mask code: torch.diff, a boolean cumsum
    "bert-mlm": lambda: hf.BertForMaskedLM(hf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                         intermediate_size=64, max_position_embeddings=32)),
}
# layers a model builds but never runs (left alone and listed): the conformer's encoder keeps wav2vec2's
# positional conv while its relative position embeddings replace it
# OPT's compressed ONNX graph flips one 8-bit code on random weights (1e-3 on one logit): checked without ONNX below
OPT = lambda: hf.OPTForSequenceClassification(hf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,  # noqa: E731
                                                           word_embed_proj_dim=32, max_position_embeddings=32, pad_token_id=0,
                                                           use_cache=False, **TEXT))
UNUSED = {"wav2vec2-conformer": {"wav2vec2_conformer.encoder.pos_conv_embed.conv"}}


def inputs_for(name: str, samples: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if name in ("gpt2", "bert", "distilbert", "albert", "electra", "mobilebert", "llama", "gemma", "opt", "qwen3", "gpt2-lm", "bert-mlm"):
        return torch.randint(2, VOCAB, (samples, TOKENS), generator=generator)
    if name.startswith("wav2vec2"):
        return torch.randn(samples, 400, generator=generator)
    if name == "whisper":  # 8 mel bins x 16 frames: its two convs halve them to its 8 positions
        return torch.randn(samples, 8, 16, generator=generator)
    return torch.randn(samples, 3, 16, 16, generator=generator)


def half_of(graph, unit) -> mc.Plan:
    """A W8A8 plan pruning half of ``unit``'s channels and nothing else."""
    n = len(graph.spec.units)
    return mc.Plan.from_choices(graph.spec, [0.5 if u is unit else 0.0 for u in graph.spec.units], [8] * n, [8] * n)


def export_checked(model, graph, x: torch.Tensor, plan: mc.Plan) -> torch.nn.Module:
    """``plan``'s export, checked: its logits equal search mode's (to 1e-5) and its parameters the count."""
    with torch.no_grad():
        exported = mc.export(model, plan, x[:8], [x], graph=graph)
        assert (logits(exported(x)) - logits(SearchModel(model, graph, [x]).apply(plan)(x))).abs().max() < 1e-5
    assert sum(p.numel() for p in exported.parameters()) == count_params(graph.spec, plan.kept)
    return exported


@pytest.mark.parametrize("name", FACTORIES)
def test_a_transformers_model_compresses_within_budget_reloads_exactly_and_matches_in_onnx(name, tmp_path):
    torch.manual_seed(0)
    model = FACTORIES[name]().eval()
    x = inputs_for(name, 120)
    with torch.no_grad():
        labels = logits(model(x)).argmax(-1)
    spec = mc.analyze(model, x[:8])
    assert {layer for layer, _ in spec.unsupported} == UNUSED.get(name, set()) and any(u.prunable for u in spec.units)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = mc.compress(model, x[:8], mc.splits_from_arrays(x.numpy(), labels.numpy()), hardware="m7-mcu",
                         budget="size=0.5", planner=HawqPlanner(), finetune_steps=2, seed=0)
    assert result.summary["within_budget"] and result.summary["untouched_layers"] == [f"{layer} (Conv1d)" for layer in UNUSED.get(name, ())]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if name == "bit":  # its WeightStandardizedConv2d layers run their folded, quantized weight
        assert {layer for layer, _ in spec.folds} == {layer.name for layer in spec.layers if layer.kind != "linear"}
    if name == "bert-mlm":  # the MLM decoder tied to the token table: one tensor, the decoder's 8-bit codes
        decoder = result.model.cls.predictions.decoder
        assert decoder.weight is result.model.bert.embeddings.word_embeddings.weight and "cls.predictions.decoder" in result.model.metacompress_weight_bits

    mc.save_compressed(result.model, tmp_path / "model")
    again = mc.load_compressed(tmp_path / "model", FACTORIES[name]().eval())
    with torch.no_grad():
        expected = logits(result.model(x[:16]))
        assert torch.equal(logits(again(x[:16])), expected)
        graph = session(to_onnx(result.model, x[:8]).SerializeToString(), optimize=False)
        assert torch.allclose(onnx_logits(graph, x[:16]), expected, atol=1e-4)


def test_bit_prunes_its_convs_group_norms_keeping_every_group_whole():
    torch.manual_seed(0)
    model, x = FACTORIES["bit"]().eval(), inputs_for("bit", 16)
    graph = build_graph(model, x[:8])
    assert sum(u.prunable for u in graph.spec.units) == len(graph.spec.units) - 1  # all but the classifier
    plan = mc.Plan.uniform(graph.spec, prune=0.5, w_bits=6, a_bits=6)
    exported = export_checked(model, graph, x, plan)
    norms = [m for m in exported.modules() if isinstance(m, torch.nn.GroupNorm)]
    # 8 groups kept whole, or one channel per group (the first stage's 8-wide bottleneck) and one group per kept channel
    assert norms and all(m.num_groups == 8 and m.num_channels % 8 == 0 or m.num_groups == m.num_channels < 8 for m in norms)
    assert any(m.num_channels < o.num_channels for m, o in zip(norms, (m for m in model.modules() if isinstance(m, torch.nn.GroupNorm))))


@pytest.mark.parametrize("name, factory, table", [("gemma", FACTORIES["gemma"], "model.embed_tokens"),
                                                  ("opt", OPT, "model.decoder.embed_positions")])
def test_an_embedding_table_subclass_stays_fp32_and_its_columns_prune_with_the_stream(name, factory, table):
    """Gemma scales its token table's rows, OPT offsets its position ids: their own forwards, so the tables stay
    fp32 tables, and until v0.17 their stream (normalised by Gemma's ``1 + weight`` RMSNorm) was quantize-only."""
    torch.manual_seed(0)
    model, x = factory().eval(), inputs_for(name, 32)
    graph = build_graph(model, x[:8])
    stream = next(u for u, g in zip(graph.spec.units, graph.units) if any(t.module == f"{table}.weight" for t in g.targets))
    assert stream.prunable and stream.channels == 32 and table not in stream.layers
    plan = mc.Plan.uniform(graph.spec, prune=0.5, w_bits=4, a_bits=6)
    exported = export_checked(model, graph, x, plan)
    assert exported.get_submodule(table).weight.shape[1] == 16 and exported.get_submodule(table).weight.dtype == torch.float32


def test_qwen3_prunes_whole_heads_past_its_per_head_qk_norms():
    """Qwen3's q_norm and k_norm are RMSNorms over the head width: Torch-Pruning maps the heads' channels onto them
    past their size, and until v0.17 the attention was quantize-only."""
    torch.manual_seed(0)
    model, x = FACTORIES["qwen3"]().eval(), inputs_for("qwen3", 32)
    graph = build_graph(model, x[:8])
    attention = "model.layers.0.self_attn."
    unit, unit_graph = next((u, g) for u, g in zip(graph.spec.units, graph.units) if u.name.startswith(attention + "q_proj"))
    assert unit.prunable and unit.channel_step == 16 and unit_graph.per_head_norms == (attention + "q_norm", attention + "k_norm")
    plan = mc.Plan.uniform(graph.spec, prune=0.5, w_bits=4, a_bits=6)
    exported = export_checked(model, graph, x, plan)
    layer = exported.model.layers[0].self_attn
    assert layer.q_proj.out_features == 16 and layer.q_norm.weight.shape == (16,)  # one head of two, the norm whole


@pytest.mark.parametrize("family, kv_heads, out", [("Llama", 2, "o_proj"), ("Qwen3", 2, "o_proj"), ("Olmo2", 2, "o_proj"), ("Phi", 4, "dense")])
def test_attention_with_key_value_heads_prunes_whole_groups_with_their_query_heads(family, kv_heads, out):
    """Four query heads of 8 over two key/value heads (grouped-query: each kv channel owns a channel of two query
    heads and the output projection's columns reading them) or four (Phi's, whose partial rotary embedding
    Torch-Pruning's trace loops on). Qwen3 normalises each head's queries and keys on its own, OLMo-2 all queries and all
    keys together (those norms prune with them). Until v0.17 these attentions were quantize-only."""
    torch.manual_seed(0)
    config = getattr(hf, f"{family}Config")(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=kv_heads,
                                            head_dim=8, intermediate_size=64, max_position_embeddings=32, pad_token_id=0, use_cache=False,
                                            **TEXT)
    model, x = getattr(hf, f"{family}ForSequenceClassification")(config).eval(), inputs_for("llama", 32)
    graph = build_graph(model, x[:8])
    attention = "model.layers.0.self_attn."
    unit = next(u for u in graph.spec.units if attention + "k_proj" in u.layers)
    assert unit.prunable and unit.channels == 8 * kv_heads and unit.channel_step == 8
    assert set(unit.layers) == {attention + p for p in ("q_proj", "k_proj", "v_proj")}
    exported = export_checked(model, graph, x, half_of(graph, unit))
    layer = exported.model.layers[0].self_attn
    widths = (layer.q_proj.out_features, layer.k_proj.out_features, layer.v_proj.out_features, getattr(layer, out).in_features)
    assert widths == (16, 4 * kv_heads, 4 * kv_heads, 16)  # half the query heads, half the key/value heads
    if family == "Olmo2":
        assert (layer.q_norm.weight.shape, layer.k_norm.weight.shape) == ((16,), (8,))


def test_gpt_neox_prunes_whole_heads_of_its_interleaved_qkv():
    """GPT-NeoX (Pythia) holds each head's query, key and value side by side in one Linear and stores no head count;
    Torch-Pruning cannot map the interleaving, and until v0.17 its attention was quantize-only."""
    torch.manual_seed(0)
    config = hf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                              pad_token_id=0, use_cache=False, **TEXT)
    model, x = hf.GPTNeoXForSequenceClassification(config).eval(), inputs_for("llama", 32)
    graph = build_graph(model, x[:8])
    fused = "gpt_neox.layers.0.attention.query_key_value"
    unit = next(u for u in graph.spec.units if fused in u.layers)
    assert unit.prunable and unit.channels == 32 and unit.channel_step == 8 and unit.layers == (fused,)
    assert next(layer for layer in graph.spec.layers if layer.name == fused).out_per_channel == 3  # a query, a key, a value row
    exported = export_checked(model, graph, x, half_of(graph, unit))
    attention = exported.gpt_neox.layers[0].attention
    assert (attention.query_key_value.out_features, attention.dense.in_features) == (48, 16)  # two heads of four


def test_bert_embedding_tables_are_quantized_with_the_rest():
    model = FACTORIES["bert"]().eval()
    spec = mc.analyze(model, inputs_for("bert", 8))
    tables = [layer for layer in spec.layers if layer.kind == "embedding"]
    assert {t.name for t in tables} == {"bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings",
                                        "bert.embeddings.token_type_embeddings"}
    w8, w2 = (mc.compressors.size_bits(spec, spec.full_kept, [bits] * len(spec.units)) for bits in (8, 2))
    weights = sum(layer.weight_count(layer.in_channels, layer.out_channels) for layer in spec.layers)
    assert w8 - w2 == 6 * weights  # the tables' weights included: a W2 plan stores them at 2 bits


def test_the_conformer_convolution_module_prunes_through_its_glu():
    spec = mc.analyze(FACTORIES["wav2vec2-conformer"]().eval(), inputs_for("wav2vec2-conformer", 8))
    module = "wav2vec2_conformer.encoder.layers.0.conv_module."
    gated = next(u for u in spec.units if module + "pointwise_conv1" in u.layers)
    assert gated.prunable and gated.layers == (module + "pointwise_conv1", module + "depthwise_conv") and gated.channels == 16
    assert next(layer for layer in spec.layers if layer.name == module + "pointwise_conv1").out_per_channel == 2


@pytest.mark.parametrize("name, embedding", [("bert", "bert.embeddings.word_embeddings"), ("gpt2", "transformer.wte"),
                                             ("vit", "vit.embeddings.patch_embeddings.projection"), ("llama", "model.embed_tokens")])
def test_the_hidden_width_prunes_with_its_norms_position_tables_and_class_token(name, embedding):
    torch.manual_seed(0)
    model, x = FACTORIES[name]().eval(), inputs_for(name, 32)
    graph = build_graph(model, x[:8])
    stream = next(u for u in graph.spec.units if embedding in u.layers)
    assert stream.prunable and stream.channels == 32 and len(stream.layers) > 4  # the embedding and every block's writers
    plan = mc.Plan.uniform(graph.spec, prune=0.5, w_bits=4, a_bits=6)
    exported = export_checked(model, graph, x, plan)
    # every norm of the stream, the final one included; Llama's RMSNorm is hand-written (its own weight and variance_epsilon)
    norms = [m for m in exported.modules() if isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LlamaRMSNorm"]
    assert norms and all(m.weight.shape == (16,) for m in norms)

"""The pruning methods on every net they apply to, built from the config registry (no training needed)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose
from dlforge.compress.export import ExportError, export_onnx
from dlforge.compress.measure import parameter_counts
from dlforge.compress.prune import make_permanent, prune_structured, prune_unstructured
from dlforge.compress.quantize import onnx_static_int8
from dlforge.config.build import build_model


def _model(tmp_path, preset: str, *overrides: str):
    cfg = compose(
        "train", [f"model={preset}", *overrides, "logger=none", f"paths.log_dir={tmp_path}"], tmp_path / "run"
    )
    torch.manual_seed(0)
    return cfg, build_model(cfg, for_training=False).eval()


def _inputs(preset: str) -> torch.Tensor:
    return torch.randn(3, 1, 8, 8) if preset in ("cnn", "vit") else torch.randint(0, 100, (3, 16))


@pytest.mark.parametrize(
    "preset,overrides,changed",
    [
        ("cnn", [], {"channels"}),
        ("vit", [], {"mlp_ratio", "heads", "head_dim"}),
        ("gpt", [], {"mlp_ratio", "heads", "head_dim"}),
        ("gpt", ["model.net.arch=llama"], {"heads", "head_dim"}),  # its SwiGLU keeps its width
        ("transformer_cls", [], {"mlp_ratio", "heads", "head_dim"}),
        ("transformer_xl", [], {"mlp_ratio"}),  # its relative attention keeps its heads
    ],
)
def test_structured_pruning_shrinks_layers_and_rebuilds_from_the_new_config(preset, overrides, changed, tmp_path):
    cfg, model = _model(tmp_path, preset, *overrides)
    state, net_changes = prune_structured(model, OmegaConf.to_container(cfg.model.net, resolve=True), 0.5)
    assert set(net_changes) == changed
    smaller = build_model(OmegaConf.merge(cfg, {"model": {"net": net_changes}}), for_training=False).eval()
    smaller.load_state_dict(state)  # strict: every sliced tensor has the shape the new config builds
    before, after = parameter_counts(model)[0], parameter_counts(smaller)[0]
    assert after < before
    with torch.no_grad():
        assert torch.isfinite(smaller(_inputs(preset))).all()


def test_structured_pruning_keeps_the_strongest_cnn_channels_so_outputs_follow(tmp_path):
    """With half of every layer's channels zeroed, pruning removes exactly those: the outputs do not change."""
    cfg, model = _model(tmp_path, "cnn")
    convs = [module for module in model.net.features if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            conv.weight[conv.out_channels // 2 :] = 0
            conv.weight[: conv.out_channels // 2] += 1e-3  # no ties with the zeroed ones
    state, net_changes = prune_structured(model, OmegaConf.to_container(cfg.model.net, resolve=True), 0.5)
    smaller = build_model(OmegaConf.merge(cfg, {"model": {"net": net_changes}}), for_training=False).eval()
    smaller.load_state_dict(state)
    images = _inputs("cnn")
    with torch.no_grad():
        torch.testing.assert_close(smaller(images), model(images), rtol=1e-5, atol=1e-5)


def test_structured_pruning_keeps_the_strongest_heads_and_mlp_units_so_outputs_follow(tmp_path):
    """With the output projections of half of every layer's heads and MLP units zeroed, pruning removes exactly
    those (wherever they sit: here the even heads, so the query/key/value slicing must pick the right rows)."""
    cfg, model = _model(tmp_path, "vit")
    with torch.no_grad():
        for block in model.net.blocks:
            attention = block.attn
            heads = attention.proj.weight.unflatten(1, (attention.heads, attention.head_dim))
            heads[:, 0::2] = 0
            block.mlp.proj.weight[:, 0::2] = 0
    state, net_changes = prune_structured(model, OmegaConf.to_container(cfg.model.net, resolve=True), 0.5)
    assert (net_changes["heads"], net_changes["head_dim"]) == (2, 32)  # 4 heads of 128 / 4 before
    smaller = build_model(OmegaConf.merge(cfg, {"model": {"net": net_changes}}), for_training=False).eval()
    smaller.load_state_dict(state)
    images = _inputs("vit")
    with torch.no_grad():
        torch.testing.assert_close(smaller(images), model(images), rtol=1e-5, atol=1e-5)


def test_unstructured_pruning_leaves_a_tied_weight_tied(tmp_path):
    _, model = _model(tmp_path, "gpt")
    prune_unstructured(model, 0.8)
    make_permanent(model)
    assert model.net.lm_head.weight is model.net.wte.weight
    assert torch.count_nonzero(model.net.wte.weight) == model.net.wte.weight.numel()
    fc = model.net.blocks[0].mlp.fc.weight
    assert 0.5 < float((fc == 0).float().mean()) < 1


def test_structured_pruning_names_the_net_it_does_not_apply_to(tmp_path):
    cfg, model = _model(tmp_path, "lstm_cls")
    with pytest.raises(ExportError, match=f"prune_structured does not apply to {cfg.model.net._target_}"):
        prune_structured(model, OmegaConf.to_container(cfg.model.net, resolve=True), 0.5)


def test_static_int8_quantizes_the_weight_layers_and_keeps_softmax_and_norms_in_fp32(tmp_path):
    import onnx

    _, model = _model(tmp_path, "gpt")
    tokens = _inputs("gpt")
    fp32 = export_onnx(model, tokens, tmp_path / "fp32.onnx", {})
    graph = onnx.load(str(onnx_static_int8(fp32, tmp_path / "int8.onnx", [tokens]))).graph
    weights = {initializer.name for initializer in graph.initializer}
    # each dequantized tensor: whether it is a weight
    dequantized = {
        node.output[0]: node.input[0] in weights for node in graph.node if node.op_type == "DequantizeLinear"
    }
    by_weight = [node for node in graph.node if node.op_type == "MatMul" and dequantized.get(node.input[1])]
    # per block: query-key-value, output, the MLP's two; and the logits
    assert len(by_weight) == 4 * 4 + 1 and all(node.input[0] in dequantized for node in by_weight)
    reading = {node.op_type for node in graph.node if any(name in dequantized for name in node.input)}
    assert not reading & {"Softmax", "LayerNormalization"}

"""The shared layers: attention (scaling, causal masks, the CPU reduced-precision path), feed-forward,
positions, RoIAlign over a pyramid."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from dlforge.nets.layers.attention import SelfAttention, scaled_dot_product
from dlforge.nets.layers.feedforward import SwiGLU
from dlforge.nets.layers.positions import relative_distances, sinusoids
from dlforge.nets.layers.roi_align import PyramidRoIAlign


def test_self_attention_is_scaled_by_head_dim_and_projected():
    torch.manual_seed(0)
    attention = SelfAttention(dim=32, heads=4)
    x = torch.randn(2, 6, 32)
    q, k, v = attention.qkv(x).split(32, dim=-1)
    heads = lambda t: t.view(2, 6, 4, 8).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attention.proj((weights @ heads(v)).transpose(1, 2).reshape(2, 6, 32))
    assert torch.allclose(attention(x), expected, atol=1e-5)


def test_causal_attention_ignores_the_future():
    attention = SelfAttention(dim=16, heads=2)
    x = torch.randn(1, 5, 16)
    changed = x.clone()
    changed[:, -1] += 1
    assert torch.allclose(attention(x, causal=True)[:, :-1], attention(changed, causal=True)[:, :-1], atol=1e-6)


def test_causal_queries_after_cached_keys_see_every_earlier_key():
    q, k, v = torch.randn(3, 1, 2, 7, 8).unbind(0)
    whole = scaled_dot_product(q, k, v, causal=True)
    for queries in (1, 3):  # the last positions, their keys and the earlier ones given
        assert torch.allclose(scaled_dot_product(q[:, :, -queries:], k, v, causal=True), whole[:, :, -queries:])


def test_reduced_precision_cpu_attention_matches_fp32():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    reference = scaled_dot_product(q, k, v, causal=True)
    low = scaled_dot_product(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), reference, atol=3e-2)


def test_swiglu_has_about_as_many_parameters_as_the_gelu_mlp_it_replaces():
    swiglu = SwiGLU(dim=128, hidden=512, bias=False)
    assert swiglu.gate.out_features == 352  # LLaMA's 8/3 * 128, rounded up to a multiple of 32
    assert sum(p.numel() for p in swiglu.parameters()) == pytest.approx(2 * 128 * 512, rel=0.04)


def test_relative_distances_and_sinusoids():
    distance = relative_distances(length=2, past=3, device=torch.device("cpu"))
    assert distance.tolist() == [[3, 2, 1, 0, -1], [4, 3, 2, 1, 0]]  # queries at positions 3 and 4 of 5
    encodings = sinusoids(5, 8, torch.device("cpu"))
    assert encodings.shape == (5, 8) and torch.equal(encodings[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_pyramid_roi_align_pools_and_backpropagates_as_torchvision():
    torch.manual_seed(0)
    levels = {"0": 64, "1": 32, "2": 16}  # strides 4, 8, 16 of a 256-pixel image
    features = {name: torch.randn(3, 8, size, size, requires_grad=True) for name, size in levels.items()}
    corners = torch.rand(3, 40, 2) * 250
    sizes = torch.rand(3, 40, 2) ** 2 * 250  # mostly small boxes (level 0), some over 112 pixels (level 1)
    boxes = list(torch.cat([corners, (corners + sizes).clamp(max=256)], dim=2))
    edges = [[0.0, 0.0, 256.0, 256.0], [255.5, 3.0, 256.0, 3.2], [0.0, 100.0, 0.4, 180.0]]  # level 2; thin, at edges
    boxes[1] = torch.cat([boxes[1], torch.tensor(edges)])
    shapes = [(256, 256)] * 3
    for size in (7, 14):
        ours = PyramidRoIAlign(list(levels), output_size=size, sampling_ratio=2)(features, boxes, shapes)
        theirs = MultiScaleRoIAlign(list(levels), output_size=size, sampling_ratio=2)(features, boxes, shapes)
        assert ours.shape == theirs.shape == (123, 8, size, size)
        assert torch.allclose(ours, theirs, atol=1e-4)  # float rounding: sums in another order
        upstream = torch.randn_like(ours)
        for name, ours_grad, theirs_grad in zip(
            levels,
            torch.autograd.grad(ours, list(features.values()), upstream),
            torch.autograd.grad(theirs, list(features.values()), upstream),
        ):
            assert theirs_grad.abs().sum() > 0, f"level {name} pooled no box"
            assert torch.allclose(ours_grad, theirs_grad, atol=1e-4)
    with pytest.raises(ValueError, match="^sampling_ratio=0: a fixed count"):  # torchvision's adaptive count
        PyramidRoIAlign(list(levels), output_size=7, sampling_ratio=0)

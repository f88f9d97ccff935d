"""Image backbones and the shared attention."""

from __future__ import annotations

import math

import pytest
import torch

from dlforge.nets.layers.attention import SelfAttention, scaled_dot_product
from dlforge.nets.vision.cnn import CNN
from dlforge.nets.vision.vit import ViT


@pytest.mark.parametrize("net", [CNN(in_channels=1, image_size=8, channels=(8, 16)),
                                 ViT(image_size=8, patch_size=2, in_channels=1, dim=32, depth=2, heads=4)])
def test_backbones_map_images_to_features(net):
    features = net(torch.randn(5, 1, 8, 8))
    assert features.shape == (5, net.out_features)


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


def test_reduced_precision_cpu_attention_matches_fp32():
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    reference = scaled_dot_product(q, k, v, causal=True)
    low = scaled_dot_product(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), reference, atol=3e-2)

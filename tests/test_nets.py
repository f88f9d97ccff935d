"""The networks' contracts (Backbone, TokenEncoder, Decoder) and the shared layers."""

from __future__ import annotations

import math

import pytest
import torch

from dlforge.nets.contracts import Backbone, Decoder, TokenEncoder
from dlforge.nets.layers.attention import SelfAttention, scaled_dot_product
from dlforge.nets.layers.feedforward import SwiGLU
from dlforge.nets.layers.positions import relative_distances, sinusoids
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.nets.text.gpt import GPT
from dlforge.nets.text.rnn import RNN
from dlforge.nets.text.transformer_xl import TransformerXL
from dlforge.nets.vision.cnn import CNN
from dlforge.nets.vision.vit import ViT

# --- contracts -----------------------------------------------------------------------------------

IMAGES = torch.randn(5, 1, 8, 8)
TOKENS = torch.randint(1, 50, (3, 12))
BACKBONES = {
    "cnn": (lambda: CNN(in_channels=1, image_size=8, channels=(8, 16)), IMAGES),
    "vit": (lambda: ViT(image_size=8, patch_size=2, in_channels=1, dim=32, depth=2, heads=4), IMAGES),
    "rnn_images": (lambda: RNN("gru", input_size=8, dim=16, bidirectional=True), IMAGES),
    "rnn_tokens": (lambda: RNN("lstm", input_size=8, dim=16, vocab_size=50), TOKENS),
    "encoder": (lambda: TransformerEncoder(vocab_size=50, max_length=16, dim=32, depth=2, heads=4), TOKENS),
}
DECODERS = {
    "gpt2": lambda: GPT(vocab_size=50, block_size=16, depth=2, heads=2, dim=32, arch="gpt2"),
    "llama": lambda: GPT(vocab_size=50, block_size=16, depth=2, heads=2, dim=32, arch="llama"),
    "transformer_xl": lambda: TransformerXL(vocab_size=50, dim=32, depth=2, heads=4, mem_len=16),
}


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_map_inputs_to_out_features(name):
    build, inputs = BACKBONES[name]
    net = build()
    assert isinstance(net, Backbone) and not isinstance(net, Decoder)
    assert net(inputs).shape == (len(inputs), net.out_features)


def test_the_encoder_is_a_token_encoder_with_one_vector_per_token():
    net = BACKBONES["encoder"][0]()
    assert isinstance(net, TokenEncoder)
    assert net.hidden_states(TOKENS).shape == (*TOKENS.shape, net.out_features)
    assert net.token_embedding.num_embeddings == net.vocab_size
    assert not isinstance(BACKBONES["rnn_tokens"][0](), TokenEncoder)


@pytest.mark.parametrize("name", DECODERS)
def test_decoders_continue_their_cache_as_if_reading_the_whole_text(name):
    torch.manual_seed(0)
    net = DECODERS[name]().eval()
    assert isinstance(net, Decoder) and not isinstance(net, Backbone)
    assert net.recurrent is (name == "transformer_xl") and (net.block_size is None) is net.recurrent
    tokens = torch.randint(0, 50, (2, 16))
    whole = net(tokens)
    assert whole.shape == (2, 16, net.vocab_size)
    cache = net.new_cache()
    pieces = [net(tokens[:, :5], cache), net(tokens[:, 5:6], cache), net(tokens[:, 6:], cache)]
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-5)
    assert not torch.allclose(net(tokens[:, 6:]), whole[:, 6:], atol=1e-3)  # without the cache: a new text


# --- shared layers -------------------------------------------------------------------------------


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

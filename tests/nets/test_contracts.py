"""The networks' contracts (Backbone, TokenEncoder, Decoder): every net meets the one its objectives need."""

from __future__ import annotations

import pytest
import torch

from dlforge.nets.contracts import Backbone, Decoder, TokenEncoder
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.nets.text.gpt import GPT
from dlforge.nets.text.rnn import RNN
from dlforge.nets.text.transformer_xl import TransformerXL
from dlforge.nets.vision.cnn import CNN
from dlforge.nets.vision.vit import ViT

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

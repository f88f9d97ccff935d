"""Text and sequence networks: GPT/LLaMA (causality, rotary positions, KV cache), LSTM/GRU (images row by
row, padded token sequences), Transformer-XL's segment memory, the encoder's padding."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlforge.data.tokenizers import (
    Tokenizer,
)
from dlforge.nets.layers.positions import apply_rotary, rotary_tables
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.nets.text.gpt import GPT
from dlforge.nets.text.rnn import RNN
from dlforge.nets.text.transformer_xl import TransformerXL
from dlforge.objectives.decoding import generate
from dlforge.objectives.masked_lm import FIRST_TEXT_ID


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_future_tokens_do_not_change_earlier_logits(arch):
    torch.manual_seed(0)
    net = GPT(vocab_size=50, block_size=32, depth=2, heads=2, dim=32, arch=arch).eval()
    tokens = torch.randint(0, 50, (2, 32))
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 50
    logits, changed_logits = net(tokens), net(changed)
    assert torch.allclose(logits[:, :20], changed_logits[:, :20], atol=1e-6)
    assert not torch.allclose(logits[:, 20:], changed_logits[:, 20:], atol=1e-3)


def test_rotary_attention_scores_depend_on_relative_position_only():
    cos, sin = rotary_tables(head_dim=16, length=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(query_position, key_position):
        rotated_q = apply_rotary(q, cos[query_position], sin[query_position])
        rotated_k = apply_rotary(k, cos[key_position], sin[key_position])
        return torch.dot(rotated_q, rotated_k)

    assert torch.allclose(score(10, 3), score(40, 33), atol=1e-5)
    assert not torch.allclose(score(10, 3), score(10, 4), atol=1e-3)
    assert torch.allclose(score(0, 0), torch.dot(q, k), atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_generation_with_kv_cache_equals_generation_without(arch):
    torch.manual_seed(0)
    net = GPT(vocab_size=60, block_size=24, depth=2, heads=2, dim=32, arch=arch).eval()
    with torch.no_grad():  # weights far from their small init, so greedy decoding walks through many tokens
        for matrix in (parameter for parameter in net.parameters() if parameter.ndim == 2):
            matrix.normal_(0, 0.3)
    prompt = torch.randint(0, 60, (30,)).tolist()  # longer than the block: the window restarts too
    outputs = [generate(net, prompt, 60, temperature=0, use_kv_cache=cached) for cached in (True, False)]
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 60 and len(set(outputs[0])) > 5  # a real sequence, not one repeated token


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_reads_images_row_by_row(cell):
    net = RNN(cell, input_size=3 * 5, dim=16, depth=2, bidirectional=True)
    assert net(torch.randn(4, 3, 7, 5)).shape == (4, 2 * 16)  # 7 rows of 3 channels x 5 pixels


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_features_of_a_token_sequence_do_not_depend_on_its_padding(cell):
    torch.manual_seed(0)
    net = RNN(cell, input_size=8, dim=16, depth=2, bidirectional=True, vocab_size=20, pad_id=0).eval()
    sequences = [torch.randint(1, 20, (length,)) for length in (7, 2, 5)]

    def padded(length: int) -> torch.Tensor:
        return torch.stack([torch.cat([s, torch.zeros(length - len(s), dtype=torch.long)]) for s in sequences])

    features = net(padded(7))
    assert features.shape == (3, net.out_features) == (3, 32)
    assert torch.allclose(net(padded(12)), features, atol=1e-6)
    alone = torch.cat([net(sequence[None]) for sequence in sequences])
    assert torch.allclose(alone, features, atol=1e-6)


def test_one_layer_bidirectional_rnn_is_torchs():
    torch.manual_seed(0)
    net = RNN("lstm", input_size=8, dim=16, bidirectional=True)
    reference = nn.LSTM(8, 16, batch_first=True, bidirectional=True)
    forward, backward = (stack.state_dict() for stack in net.stacks)
    reference.load_state_dict({**forward, **{f"{name}_reverse": value for name, value in backward.items()}})
    images = torch.randn(4, 1, 6, 8)
    final_states = reference(images[:, 0])[1][0]  # (directions, batch, hidden)
    assert torch.allclose(net(images), torch.cat(list(final_states), dim=1), atol=1e-6)


def _transformer_xl(mem_len: int) -> TransformerXL:
    torch.manual_seed(0)
    return TransformerXL(vocab_size=50, dim=32, depth=3, heads=4, mem_len=mem_len).eval()


def test_transformer_xl_segment_after_segment_equals_one_pass_over_the_whole_text():
    """With a memory as long as the earlier text, reading it in segments loses nothing: relative
    positions and the cached layer inputs reproduce the one-pass computation."""
    net = _transformer_xl(mem_len=16)
    tokens = torch.randint(0, 50, (2, 32))
    whole = net(tokens)
    memory = net.new_cache()
    first = net(tokens[:, :16], memory)
    assert [layer.shape for layer in memory.layers] == [(2, 16, 32)] * 3  # (batch, mem_len, dim) per layer
    second = net(tokens[:, 16:], memory)
    assert len(memory) == 16
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)


def test_transformer_xl_memory_is_detached():
    net = _transformer_xl(mem_len=16).train()
    memory = net.new_cache()
    net(torch.randint(0, 50, (2, 8)), memory).sum().backward()
    assert not any(layer.requires_grad for layer in memory.layers)


def test_transformer_xl_future_tokens_do_not_change_earlier_logits_memory_included():
    net = _transformer_xl(mem_len=16)
    tokens = torch.randint(0, 50, (2, 32))
    memory = net.new_cache()
    net(tokens[:, :16], memory)
    changed = tokens.clone()
    changed[:, 16 + 5] = (changed[:, 16 + 5] + 1) % 50
    logits = net(tokens[:, 16:], copy.deepcopy(memory))
    logits_changed = net(changed[:, 16:], memory)
    assert torch.equal(logits[:, :5], logits_changed[:, :5])
    assert not torch.allclose(logits[:, 5:], logits_changed[:, 5:])


def test_transformer_xl_memory_carries_the_previous_segment_unless_mem_len_is_0():
    tokens = torch.randint(0, 50, (2, 32))
    for mem_len, memory_changes_logits in ((16, True), (8, True), (0, False)):
        net = _transformer_xl(mem_len)
        memory = net.new_cache()
        net(tokens[:, :16], memory)
        assert len(memory) == mem_len
        with_memory, without_memory = net(tokens[:, 16:], memory), net(tokens[:, 16:])
        assert torch.allclose(with_memory, without_memory) is not memory_changes_logits, mem_len


def test_greedy_generation_from_transformer_xl_with_and_without_its_memory():
    """Generation goes through the Decoder contract: with the cache each new token is read after the
    memory; without it the whole text is read at once. They agree while the text fits in the memory."""
    net = _transformer_xl(mem_len=24)
    with torch.no_grad():  # weights far from their small init, so greedy decoding walks through many tokens
        for matrix in (parameter for parameter in net.parameters() if parameter.ndim == 2):
            matrix.normal_(0, 0.3)
    prompt = torch.randint(0, 50, (10,)).tolist()
    cached, uncached = (generate(net, prompt, 40, temperature=0, use_kv_cache=cache) for cache in (True, False))
    assert len(cached) == len(uncached) == 40 and len(set(cached)) > 5  # a real sequence, not one repeated token
    fits = 24 + 1 - len(prompt)  # new tokens whose text before them is at most mem_len tokens
    assert cached[:fits] == uncached[:fits]
    assert cached != uncached  # beyond the memory, the cached path forgets what the uncached one sees


def test_transformer_xl_ties_its_output_embedding():
    net = _transformer_xl(mem_len=0)
    assert net.head.weight is net.embedding.weight


def encoder(**sizes) -> TransformerEncoder:
    return TransformerEncoder(**{"vocab_size": 40, "max_length": 32, "dim": 32, "depth": 2, "heads": 4, **sizes})


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_ignores_padding(pooling):
    torch.manual_seed(0)
    net = encoder(pooling=pooling).eval()
    tokens = torch.randint(FIRST_TEXT_ID, 40, (3, 10))
    tokens[:, 0] = Tokenizer.cls_id
    padded = torch.cat([tokens, torch.full((3, 6), Tokenizer.pad_id)], dim=1)
    assert torch.allclose(net.hidden_states(padded)[:, :10], net.hidden_states(tokens), atol=1e-5)
    assert torch.allclose(net(padded), net(tokens), atol=1e-5)
    assert net(tokens).shape == (3, net.out_features)

"""Recurrent networks: LSTM/GRU classifiers (images row by row, padded token sequences) and the
Transformer-XL language model's segment memory; the scripts end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import assert_ok, read_metrics, run_dirs, run_script
from dlforge.nets.text.rnn import RNN
from dlforge.nets.text.transformer_xl import TransformerXL
from dlforge.tasks.generate import generate

# --- LSTM / GRU ----------------------------------------------------------------------------------


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


# --- Transformer-XL ------------------------------------------------------------------------------


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


# --- end to end, through the scripts -------------------------------------------------------------


def test_lstm_learns_digits_read_row_by_row(log_dir):
    assert_ok(run_script("train", "model=lstm_cls", "trainer=cpu", "logger=none", log_dir=log_dir))
    metrics = read_metrics(run_dirs(log_dir)[0])
    assert metrics["test/acc"] >= 0.95, metrics


def test_generate_samples_from_a_transformer_xl_checkpoint(log_dir):
    assert_ok(run_script("train", "model=transformer_xl", "debug=limit_batches", "logger=none", log_dir=log_dir))
    checkpoint = run_dirs(log_dir)[0] / "checkpoints" / "best.ckpt"
    for use_kv_cache in ("true", "false"):
        result = run_script("generate", f"ckpt_path={checkpoint}", "prompt='def '", "max_new_tokens=30",
                            "temperature=0", f"use_kv_cache={use_kv_cache}", log_dir=log_dir)
        assert_ok(result)
        sample = (run_dirs(log_dir, "generate")[-1] / "sample.txt").read_text()
        assert sample.startswith("def ") and len(sample) == len("def ") + 30  # char level: one char a token

"""Encoder-decoder nets (the Transformer and the GRU with attention) and decoding them: the cache changes no
logit, source padding changes nothing, the attention maps are the nets' own attention, beam search finds what
exhaustive search finds and greedy misses."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dlforge.nets.contracts import EncoderDecoder
from dlforge.nets.layers.attention import merge_heads, split_heads
from dlforge.nets.text.rnn_seq2seq import GRUSeq2Seq
from dlforge.nets.text.seq2seq import Seq2SeqTransformer
from dlforge.objectives.translating import beam_search, greedy, length_penalty

START, EOS = 3, 4
NETS = {
    "transformer": lambda: Seq2SeqTransformer(vocab_size=40, encoder_depth=2, decoder_depth=2, heads=2, dim=32),
    "gru": lambda: GRUSeq2Seq(vocab_size=40, dim=32, depth=2),
}


def _source() -> torch.Tensor:
    """Two sources, the second shorter and padded with id 0."""
    source = torch.randint(5, 40, (2, 9))
    source[0, 8], source[1, 5] = EOS, EOS
    source[1, 6:] = 0
    return source


@pytest.mark.parametrize("kind", NETS)
def test_cached_step_by_step_decoding_gives_the_full_pass_logits(kind):
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    assert isinstance(net, EncoderDecoder)
    source, target = _source(), torch.cat([torch.full((2, 1), START), torch.randint(5, 40, (2, 7))], dim=1)
    with torch.no_grad():
        full = net(source, target)
        memory, cache = net.encode(source), net.new_cache()
        steps = torch.cat([net.decode(target[:, i : i + 1], memory, cache) for i in range(target.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", NETS)
def test_source_padding_changes_no_logit(kind):
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    source = _source()
    target = torch.cat([torch.full((1, 1), START), torch.randint(5, 40, (1, 5))], dim=1)
    with torch.no_grad():
        alone = net(source[1:, :6], target)
        padded = net(source[1:], target)
        more_padding = net(torch.cat([source[1:], torch.zeros(1, 4, dtype=torch.long)], dim=1), target)
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(more_padding, alone, rtol=1e-5, atol=1e-5)


CROSS_ATTENTION_SHOWN = {"transformer": lambda net: net.decoder[-1].cross, "gru": lambda net: net.attention}


@pytest.mark.parametrize("kind", NETS)
def test_cross_attention_is_the_nets_own_attention_over_the_real_source_tokens(kind):
    """Each row of the map is a distribution over the source's real tokens (none on padding), and it is what
    the net computes: the layer's weights for the queries the net gives it, which times the values and
    projected are the layer's (SDPA) output in the net's forward pass."""
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    source, target = _source(), torch.cat([torch.full((2, 1), START), torch.randint(5, 40, (2, 6))], dim=1)
    layer = CROSS_ATTENTION_SHOWN[kind](net)
    seen = {}
    hook = layer.register_forward_hook(lambda module, args, output: seen.update(args=args, output=output))
    with torch.no_grad():
        net(source, target)
        hook.remove()
        maps = net.cross_attention(source, target)
        queries, memory, mask = seen["args"][:3]
        heads = layer.weights(queries, memory, mask)
        values = split_heads(layer.kv(memory).chunk(2, dim=-1)[1], layer.heads)
        output = layer.proj(merge_heads(heads @ values))
    assert maps.shape == (2, 7, 9)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 7))
    assert (maps[1, :, 6:] == 0).all() and (maps[0] > 0).all() and (maps[1, :, :6] > 0).all()
    torch.testing.assert_close(maps, heads.mean(1))
    torch.testing.assert_close(output, seen["output"], rtol=1e-5, atol=1e-5)


class MarkovTable(nn.Module):
    """An EncoderDecoder whose next-token distribution depends on the last token only (a fixed table), so
    every hypothesis' probability is known: token 5 is the likeliest first token, but every continuation
    after it is unlikely, while 6 leads to a sure ending."""

    vocab_size = 8

    def __init__(self):
        super().__init__()
        probabilities = torch.full((8, 8), 1e-6)
        probabilities[START, [5, 6]] = torch.tensor([0.55, 0.45])
        probabilities[5, [5, 6, 7, EOS]] = 0.25  # after 5: four equally likely tokens
        probabilities[6, 7] = 1.0
        probabilities[7, EOS] = 1.0
        self.table = probabilities.log()

    def encode(self, source):
        return source[..., None].float(), source != 0

    def new_cache(self):
        return _NoCache()

    def decode(self, tokens, memory, cache=None):
        return self.table[tokens]

    def forward(self, source, target=None):
        return self.decode(target, self.encode(source))


class _NoCache:
    def select(self, rows):
        pass


def test_beam_search_finds_the_best_scored_hypothesis_that_greedy_misses():
    net, source = MarkovTable(), torch.tensor([[5, EOS]])  # 2 source tokens: at most ceil(1.2 * 2 + 10) = 13 tokens
    alpha = 0.6

    def score(tokens):
        log_probability = sum(net.table[a, b].item() for a, b in itertools.pairwise([START, *tokens, EOS]))
        return log_probability / length_penalty(len(tokens) + 1, alpha)

    exhaustive = max(
        (list(tokens) for length in range(4) for tokens in itertools.product([5, 6, 7], repeat=length)), key=score
    )
    assert exhaustive == [6, 7]
    assert greedy(net, source, START, EOS) != exhaustive  # greedy takes 5 first
    assert beam_search(net, source, START, EOS, beam_size=2, alpha=alpha) == [exhaustive]
    assert math.isclose(score([6, 7]), math.log(0.45) / length_penalty(3, alpha), rel_tol=1e-5)


def test_decoding_stops_at_the_length_limit_without_eos():
    net = MarkovTable()
    net.table[:, EOS] = -1e9  # never ends
    net.table[5, :] = net.table[6, :] = net.table[7, :] = torch.tensor([0.1] * 8).log()
    source = torch.tensor([[5, 6, 7, EOS], [5, EOS, 0, 0]])  # 4 and 2 tokens: 15 and 13 target tokens at most
    assert [len(tokens) for tokens in greedy(net, source, START, EOS)] == [15, 13]
    assert [len(tokens) for tokens in beam_search(net, source, START, EOS, beam_size=3)] == [15, 13]


@pytest.mark.parametrize("kind", NETS)
def test_a_row_that_leaves_the_batch_changes_no_other_rows_translation(kind):
    """Rows end at different steps (their own length limits, or eos) and leave the batch, memory and cache
    included: each row's translation in the batch is the one it gets alone."""
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    lengths = [9, 3, 6, 4, 8, 2]
    source = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        source[row, : length - 1] = torch.randint(5, 40, (length - 1,))
        source[row, length - 1] = EOS
    for decode in (greedy, lambda *args: beam_search(*args, beam_size=3)):
        batched = decode(net, source, START, EOS)
        alone = [decode(net, source[row : row + 1, :length], START, EOS)[0] for row, length in enumerate(lengths)]
        assert batched == alone
        assert len({len(tokens) for tokens in batched}) > 2  # the rows did end at different steps

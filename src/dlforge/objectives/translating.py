"""Decoding a target sequence from an `EncoderDecoder` net, a batch of sources at a time: greedy, and beam
search with GNMT's length penalty (Wu et al. 2016). Both encode the source once and feed the decoder one
token per step through its cache.

A target starts with `start_id` and ends at `eos_id`; a source of n tokens (its eos included) gets at most
`ceil(max_length_ratio * n + max_length_offset)` target tokens (1.2 n + 10 by default, as is usual for
translation), after which its hypotheses end as they are. The returned ids exclude the start and eos.
"""

from __future__ import annotations

import math

import torch

from dlforge.nets.contracts import EncoderDecoder

MAX_LENGTH_RATIO, MAX_LENGTH_OFFSET = 1.2, 10


def max_lengths(source: torch.Tensor, pad_id: int, ratio: float, offset: int) -> list[int]:
    """The most target tokens each source row may get."""
    return [math.ceil(ratio * int(n) + offset) for n in (source != pad_id).sum(1)]


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6) ** alpha: a hypothesis's log-probability is divided by it. alpha 0: none."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def greedy(
    net: EncoderDecoder,
    source: torch.Tensor,
    start_id: int,
    eos_id: int,
    pad_id: int = 0,
    ratio: float = MAX_LENGTH_RATIO,
    offset: int = MAX_LENGTH_OFFSET,
) -> list[list[int]]:
    """The likeliest next token at every step, for each source row. A row that ends (eos or its length limit)
    leaves the batch, memory and cache included, so a batch costs its rows' own lengths, not its longest's."""
    memory = net.encode(source)
    cache = net.new_cache()
    limits = torch.tensor(max_lengths(source, pad_id, ratio, offset), device=source.device)
    tokens = torch.full((len(source), 1), start_id, device=source.device)
    outputs: list[list[int]] = [[] for _ in range(len(source))]
    rows = torch.arange(len(source), device=source.device)  # the source rows still decoding
    for step in range(1, int(limits.max()) + 1):
        tokens = net.decode(tokens, memory, cache)[:, -1].argmax(-1, keepdim=True)
        for row, token in zip(rows.tolist(), tokens[:, 0].tolist()):
            outputs[row].append(token)
        ends = (tokens[:, 0] == eos_id) | (limits[rows] <= step)
        if ends.all():
            break
        if ends.any():
            going = (~ends).nonzero()[:, 0]
            rows, tokens, memory = rows[going], tokens[going], tuple(part[going] for part in memory)
            cache.select(going)
    return [_until_eos(row, eos_id) for row in outputs]


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


@torch.no_grad()
def beam_search(
    net: EncoderDecoder,
    source: torch.Tensor,
    start_id: int,
    eos_id: int,
    beam_size: int = 5,
    alpha: float = 0.6,
    pad_id: int = 0,
    ratio: float = MAX_LENGTH_RATIO,
    offset: int = MAX_LENGTH_OFFSET,
) -> list[list[int]]:
    """For each source row, the hypothesis with the best length-penalised log-probability.

    Each step extends every live hypothesis by every token and keeps the `beam_size` best extensions that do
    not end; an extension that ends (eos) among the `beam_size` best becomes a finished hypothesis. A row is
    done once it has `beam_size` finished ones, or at its length limit, where its live hypotheses are
    finished as they are (fairseq's scheme). A done row leaves the batch, as in `greedy`."""
    batch, k = len(source), beam_size
    states, mask = net.encode(source)
    memory = (states.repeat_interleave(k, 0), mask.repeat_interleave(k, 0))
    cache = net.new_cache()
    limits = max_lengths(source, pad_id, ratio, offset)
    rows = list(range(batch))  # the source rows still searching: rows[i]'s beams are i*k .. i*k+k-1
    scores = torch.full((batch, k), -math.inf, device=source.device)
    scores[:, 0] = 0  # one live hypothesis to start with: the others would repeat it
    hypotheses = torch.full((batch * k, 1), start_id, device=source.device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    for step in range(1, max(limits) + 1):
        live = len(rows)
        logits = net.decode(hypotheses[:, -1:], memory, cache)[:, -1].float()
        candidates = (scores[..., None] + logits.log_softmax(-1).view(live, k, -1)).flatten(1)  # (live, k * vocab)
        top_scores, top = candidates.topk(2 * k, dim=1)  # at least k of them do not end
        beams, tokens = top // logits.shape[-1], top % logits.shape[-1]
        ends = tokens == eos_id
        for i, rank in (ends[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero().tolist():
            history = hypotheses[i * k + beams[i, rank], 1:].tolist()
            finished[rows[i]].append((top_scores[i, rank].item() / length_penalty(step, alpha), history))
        scores, kept = top_scores.masked_fill(ends, -math.inf).topk(k, dim=1)
        parents = (torch.arange(live, device=source.device)[:, None] * k + beams.gather(1, kept)).flatten()
        hypotheses = torch.cat([hypotheses[parents], tokens.gather(1, kept).flatten()[:, None]], dim=1)
        going = []
        for i, row in enumerate(rows):
            if step == limits[row]:
                for beam in range(k):
                    if math.isfinite(scores[i, beam].item()):
                        score = scores[i, beam].item() / length_penalty(step, alpha)
                        finished[row].append((score, hypotheses[i * k + beam, 1:].tolist()))
            elif len(finished[row]) < k:
                going.append(i)
        if not going:
            break
        if len(going) < live:  # done rows leave the batch, memory and cache included
            keep = torch.tensor(going, device=source.device)
            beams_kept = (keep[:, None] * k + torch.arange(k, device=source.device)).flatten()
            rows, scores, hypotheses = [rows[i] for i in going], scores[keep], hypotheses[beams_kept]
            memory, parents = tuple(part[beams_kept] for part in memory), parents[beams_kept]
        cache.select(parents)
    return [max(row, key=lambda scored: scored[0])[1] for row in finished]

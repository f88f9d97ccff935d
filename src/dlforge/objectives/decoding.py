"""Decoding text from a causal language model's network through its `Decoder` contract: for `generate.py`, and
for the samples a causal LM shows at the end of testing.

The context is a window of the text, as long as the network's `block_size`. Once it is full it restarts
from its last block_size // 2 tokens; a network without a block_size (None, Transformer-XL) has no window:
its context is the whole text.

With the cache (`use_kv_cache`), each step feeds only the tokens not yet cached, and the cache is refilled
only at a restart. For a KV cache (GPT) that changes the cost of a step, never its result: both paths use
the same windows. For Transformer-XL the cache is its memory: each new token is read as a segment after
the last `mem_len` positions of every layer, as in training, while without the cache each step reads
the whole text as one segment. The two agree as long as the text before the new token fits in the
memory (at most mem_len tokens), and differ after that.
"""

from __future__ import annotations

import torch

from dlforge.nets.contracts import Decoder


@torch.no_grad()
def generate(
    net: Decoder,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> list[int]:
    """The tokens sampled after `prompt`: up to `max_new_tokens`, ending early after `eos_id`.

    `temperature` 0 is greedy decoding. `top_k` keeps the k likeliest tokens, `top_p` the smallest set
    whose probability reaches p; `vocab_size` excludes the ids beyond the tokenizer's vocabulary. `device`
    is the net's. The context and the cache are as the module docstring says.
    """
    window = net.block_size  # None: no window, the context is the whole text
    tokens = list(prompt)
    start = 0 if window is None else max(0, len(tokens) - window)  # the context is tokens[start:]
    cache, cached = None, 0  # with the cache: the cache of tokens[start : start + cached]
    for _ in range(max_new_tokens):
        if window is not None and len(tokens) - start > window:
            start, cache = len(tokens) - window // 2, None
        if use_kv_cache:
            if cache is None:
                cache, cached = net.new_cache(), 0
            logits = net(torch.tensor([tokens[start + cached :]], device=device), cache)
            cached = len(tokens) - start
        else:
            logits = net(torch.tensor([tokens[start:]], device=device))
        token = sample(logits[0, -1, :vocab_size], temperature, top_k, top_p, generator)
        tokens.append(token)
        if token == eos_id:
            break
    return tokens[len(prompt) :]


def sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> int:
    """One token id from next-token logits (vocab,)."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < len(logits):
        logits[logits < torch.topk(logits, top_k).values[-1]] = -float("inf")
    if top_p is not None and top_p < 1:
        probabilities, order = torch.sort(logits.softmax(-1), descending=True)
        outside = probabilities.cumsum(-1) - probabilities >= top_p  # the likeliest token always stays
        logits[order[outside]] = -float("inf")
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))

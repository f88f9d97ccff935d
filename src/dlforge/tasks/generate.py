"""Sampling text from a trained causal language model, through the `Decoder` contract of its network.
The network and the tokenizer are rebuilt from the checkpoint alone: the run config and the datamodule's
state (the tokenizer) stored in it.

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

import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from omegaconf import DictConfig

from dlforge.config.checks import check_fields
from dlforge.data.tokenizers import Tokenizer
from dlforge.errors import CheckpointError, ConfigError
from dlforge.nets.contracts import Decoder
from dlforge.objectives.base import data_tokenizer
from dlforge.run.load import load_run
from dlforge.run.summary import print_summary, write_metrics


@dataclass
class GenerateOptions:
    """The keys of `conf/generate.yaml`."""

    ckpt_path: str
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: Optional[int]
    top_p: Optional[float]
    seed: int
    use_kv_cache: bool
    device: Literal["auto", "cpu", "cuda"]


def main(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    check_fields(cfg, GenerateOptions)
    if (
        cfg.temperature < 0
        or (cfg.top_k is not None and cfg.top_k < 1)
        or (cfg.top_p is not None and not 0 < cfg.top_p <= 1)
    ):
        raise ConfigError(
            f"temperature={cfg.temperature}, top_k={cfg.top_k}, top_p={cfg.top_p}: "
            "need temperature >= 0, top_k >= 1 or null, 0 < top_p <= 1 or null"
        )
    net, tokenizer = load_language_model(cfg.ckpt_path)
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    prompt = tokenizer.encode(cfg.prompt)
    if not prompt:
        raise ConfigError("prompt: empty; give the model some text to continue, e.g. prompt='def '")
    started = time.perf_counter()
    new = generate(
        net.to(device),
        prompt,
        cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        eos_id=tokenizer.eos_id,
        vocab_size=tokenizer.vocab_size,
        use_kv_cache=cfg.use_kv_cache,
        generator=torch.Generator(device).manual_seed(cfg.seed),
        device=device,
    )
    seconds = time.perf_counter() - started
    text = tokenizer.decode(prompt + new)
    run_dir = HydraConfig.get().runtime.output_dir
    with open(f"{run_dir}/sample.txt", "w") as file:
        file.write(text)
    metrics = {"new tokens": len(new), "seconds": seconds, "tokens/s": len(new) / seconds}
    write_metrics(run_dir, metrics)
    print(text)
    print_summary(f"generate from {cfg.ckpt_path}", metrics, {"run dir": run_dir})
    return text


def load_language_model(ckpt_path: str) -> tuple[Decoder, Tokenizer]:
    """The checkpoint's network (in eval mode, on CPU) and its tokenizer, rebuilt from the checkpoint."""
    run = load_run(ckpt_path)
    tokenizer = data_tokenizer(run.datamodule)
    if tokenizer is None or not isinstance(run.model.net, Decoder):
        raise CheckpointError(f"{ckpt_path}: not a causal language model's checkpoint; generation needs one")
    return run.model.net, tokenizer


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

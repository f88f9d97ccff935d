"""Sampling text from a trained causal language model. The network and the tokenizer are rebuilt from
the checkpoint alone: the run config and the datamodule's state (the tokenizer) stored in it.

Contexts longer than the network's block_size: once the window is full it restarts from its last
block_size // 2 tokens. Both paths (with and without the KV cache) use the same windows, so the cache
changes the cost of a step, never its result; the cache is refilled only at a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from dlforge.config.checks import check_fields
from dlforge.run.load import load_run
from dlforge.errors import CheckpointError, ConfigError
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
    if cfg.temperature < 0 or (cfg.top_k is not None and cfg.top_k < 1) or (cfg.top_p is not None and not 0 < cfg.top_p <= 1):
        raise ConfigError(f"temperature={cfg.temperature}, top_k={cfg.top_k}, top_p={cfg.top_p}: "
                          "need temperature >= 0, top_k >= 1 or null, 0 < top_p <= 1 or null")
    net, tokenizer = load_language_model(cfg.ckpt_path)
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    prompt = tokenizer.encode(cfg.prompt)
    if not prompt:
        raise ConfigError("prompt: empty; give the model some text to continue, e.g. prompt='def '")
    started = time.perf_counter()
    new = generate(
        net.to(device), prompt, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        eos_id=tokenizer.eos_id, vocab_size=tokenizer.vocab_size, use_kv_cache=cfg.use_kv_cache,
        generator=torch.Generator(device).manual_seed(cfg.seed),
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


def load_language_model(ckpt_path: str):
    """The checkpoint's network (in eval mode, on CPU) and its tokenizer, rebuilt from the checkpoint."""
    run = load_run(ckpt_path)
    tokenizer = getattr(run.datamodule, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError(f"{ckpt_path} holds no tokenizer: it is not a language model's checkpoint")
    return run.model.net, tokenizer


@torch.no_grad()
def generate(
    net: nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    use_kv_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The tokens sampled after `prompt`: up to `max_new_tokens`, ending early after `eos_id`.

    `temperature` 0 is greedy decoding. `top_k` keeps the k likeliest tokens, `top_p` the smallest set
    whose probability reaches p; `vocab_size` excludes the ids beyond the tokenizer's vocabulary.
    """
    if not hasattr(net, "block_size"):
        raise ConfigError(f"{type(net).__name__} has no block_size (fixed context length): generation supports GPT-style nets")
    if use_kv_cache and not hasattr(net, "new_cache"):
        raise ConfigError(f"use_kv_cache: {type(net).__name__} has no KV cache; set use_kv_cache=false")
    device = next(net.parameters()).device
    tokens = list(prompt)
    start = max(0, len(tokens) - net.block_size)  # the window is tokens[start:]
    cache, cached = None, 0  # with the cache: the KV cache of tokens[start : start + cached]
    for _ in range(max_new_tokens):
        if len(tokens) - start > net.block_size:
            start, cache = len(tokens) - net.block_size // 2, None
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


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None) -> int:
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

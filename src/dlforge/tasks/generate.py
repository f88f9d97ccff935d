"""Sampling text from a trained causal language model, through the `Decoder` contract of its network.
The network and the tokenizer are rebuilt from the checkpoint alone: the run config and the datamodule's
state (the tokenizer) stored in it.

The sampling itself (the context window, the cache) is `dlforge.objectives.decoding.generate`'s.
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
from dlforge.objectives.decoding import generate
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

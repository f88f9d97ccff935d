"""Translating a text with a trained sequence-to-sequence model, through the `EncoderDecoder` contract of its
network. The network and the tokenizer are rebuilt from the checkpoint alone: the run config and the
datamodule's state (the tokenizer) stored in it. Decoding is `dlforge.objectives.translating`'s. The run dir
gets the translation (translation.txt) and what the decoder attended to while writing it (attention.png)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from omegaconf import DictConfig

from dlforge.callbacks.media import write_media
from dlforge.config.checks import check_fields
from dlforge.errors import CheckpointError, ConfigError
from dlforge.nets.contracts import EncoderDecoder
from dlforge.objectives.base import data_tokenizer
from dlforge.objectives.translating import beam_search, greedy
from dlforge.run.load import load_run
from dlforge.run.summary import print_summary, write_metrics


@dataclass
class TranslateOptions:
    """The keys of `conf/translate.yaml`."""

    ckpt_path: str
    text: str
    beam_size: int
    length_penalty: Optional[float]
    device: Literal["auto", "cpu", "cuda"]


def main(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    check_fields(cfg, TranslateOptions)
    if cfg.beam_size < 1:
        raise ConfigError(f"beam_size={cfg.beam_size}: need beam_size >= 1 (1: greedy)")
    run = load_run(cfg.ckpt_path)
    net, tokenizer = run.model.net, data_tokenizer(run.datamodule)
    if tokenizer is None or not isinstance(net, EncoderDecoder):
        raise CheckpointError(f"{cfg.ckpt_path}: not a sequence-to-sequence model's checkpoint; translation needs one")
    ids = tokenizer.encode(cfg.text)
    if not ids:
        raise ConfigError("text: empty; give the model a sentence to translate, e.g. 'text=\"Is the server running?\"'")
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    max_length = run.config.data.max_length
    source = torch.tensor([[*ids[: max_length - 1], tokenizer.eos_id]], device=device)
    specials = (tokenizer.cls_id, tokenizer.eos_id)
    started = time.perf_counter()
    if cfg.beam_size == 1:
        tokens = greedy(net.to(device), source, *specials)[0]
    else:
        alpha = cfg.length_penalty if cfg.length_penalty is not None else run.model.length_penalty
        tokens = beam_search(net.to(device), source, *specials, beam_size=cfg.beam_size, alpha=alpha)[0]
    seconds = time.perf_counter() - started
    translation = tokenizer.decode(tokens)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "translation.txt").write_text(translation + "\n")
    run.model.tokenizer = tokenizer
    kind = "greedy translation" if cfg.beam_size == 1 else f"beam {cfg.beam_size} translation"
    with torch.no_grad():
        (attention,) = run.model.attention_maps(source, [tokens], kind)
    write_media(dataclasses.replace(attention, key="attention"), run_dir)
    metrics = {"source tokens": source.shape[1], "target tokens": len(tokens), "seconds": seconds}
    write_metrics(run_dir, metrics)
    print(translation)
    print_summary(f"translate with {cfg.ckpt_path}", metrics, {"run dir": str(run_dir)})
    return translation

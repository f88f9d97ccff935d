"""Transcribing audio files with a CTC model's checkpoint (greedy decoding, as in training), or spotting the
keyword of each with a keyword classifier's: the network is rebuilt from the checkpoint alone, the files are
resampled to its rate. Keyword spotting slides the classifier's clip length over a file (`window_hop` apart)
and takes the most probable keyword of any window, if it is at least `keyword_threshold` probable, else
`_unknown_`. Written into the run dir: `transcripts.tsv` (file, output, reference) and `metrics.json` (WER and
CER, or keyword accuracy, when references are given)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from omegaconf import DictConfig, ListConfig

from dlforge.config.checks import check_fields
from dlforge.data.sources.speech import UNKNOWN, read_resampled
from dlforge.errors import CheckpointError, ConfigError
from dlforge.nets.contracts import Backbone, FrameClassifier
from dlforge.run.load import load_run
from dlforge.run.summary import print_summary, write_metrics


@dataclass
class TranscribeOptions:
    """The keys of `conf/transcribe.yaml`."""

    ckpt_path: str
    audio: Any  # a path or a list of them
    references: Optional[Any]
    keyword_threshold: float
    window_hop: float
    device: Literal["auto", "cpu", "cuda"]


def main(cfg: DictConfig) -> list[str]:
    from hydra.core.hydra_config import HydraConfig
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    check_fields(cfg, TranscribeOptions)
    files = [str(path) for path in cfg.audio] if isinstance(cfg.audio, ListConfig) else [str(cfg.audio)]
    references = None if cfg.references is None else [str(text) for text in cfg.references]
    if references is not None and len(references) != len(files):
        raise ConfigError(f"references: {len(references)} given for {len(files)} audio files; give one per file")
    run = load_run(cfg.ckpt_path)
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    model = run.model.to(device)
    if isinstance(model.net, FrameClassifier):
        outputs = [model.transcribe(_wave(path, model.net.sample_rate, device))[0] for path in files]
        metrics = {} if references is None else {
            "wer": float(word_error_rate(outputs, references)), "cer": float(char_error_rate(outputs, references))
        }  # fmt: skip
    elif isinstance(model.net, Backbone) and hasattr(run.datamodule, "clip_samples"):
        classes = list(run.datamodule.source.classes)
        window, hop = run.datamodule.clip_samples, max(1, round(cfg.window_hop * 16000))
        outputs = [
            _spotted(model, _wave(path, 16000, device)[0], window, hop, classes, cfg.keyword_threshold)
            for path in files
        ]
        metrics = {} if references is None else {
            "acc": sum(out == ref for out, ref in zip(outputs, references)) / len(files)
        }  # fmt: skip
    else:
        raise CheckpointError(f"{cfg.ckpt_path}: neither a CTC model's nor a keyword classifier's checkpoint")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with open(run_dir / "transcripts.tsv", "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t")
        writer.writerow(["audio", "output", "reference"])
        writer.writerows(
            [path, out, "" if references is None else ref]
            for path, out, ref in zip(files, outputs, references or files)
        )
    write_metrics(run_dir, metrics)
    for path, out in zip(files, outputs):
        print(f"{path}\t{out}")
    print_summary(f"transcribe with {cfg.ckpt_path}", metrics, {"run dir": str(run_dir)})
    return outputs


def _wave(path: str, rate: int, device: str) -> torch.Tensor:
    return torch.from_numpy(read_resampled(Path(path), rate))[None].to(device)


@torch.no_grad()
def _spotted(model, wave: torch.Tensor, window: int, hop: int, classes: list[str], threshold: float) -> str:
    """The most probable keyword over the file's windows of `window` samples, or `_unknown_`."""
    wave = torch.nn.functional.pad(wave, (0, max(0, window - len(wave))))
    windows = wave.unfold(0, window, hop)  # (count, window)
    probabilities = model(windows).softmax(-1).amax(0)  # each class's best window
    keywords = [index for index, name in enumerate(classes) if not name.startswith("_")]
    best = max(keywords, key=lambda index: probabilities[index])
    return classes[best] if probabilities[best] >= threshold else UNKNOWN

"""The CTC objective: greedy decoding, WER and CER as jiwer scores the same transcripts, and the transcribe
script on a CTC model's and a keyword classifier's checkpoints."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile
import torch

from conftest import compose, job_config, read_metrics, small_batches
from dlforge.data.audio import ALPHABET, decode, encode
from dlforge.nets.audio.ctc import ConvBiGRU
from dlforge.objectives.ctc import CTCRecognizer, greedy_decode


def test_greedy_decoding_merges_repeats_and_drops_blanks_within_each_clips_frames():
    a, b = encode("a")[0], encode("b")[0]
    best = torch.tensor([[a, a, 0, a, b, b, 0], [b, 0, 0, b, a, a, a]])
    logits = torch.nn.functional.one_hot(best, len(ALPHABET) + 1).float()
    assert [decode(ids) for ids in greedy_decode(logits, torch.tensor([7, 4]))] == ["aab", "bb"]


def test_wer_and_cer_are_jiwers_over_the_split():
    torch.manual_seed(0)
    model = CTCRecognizer(ConvBiGRU(len(ALPHABET) + 1, n_mels=16, channels=4, dim=8, depth=1)).eval()
    said = ["one two three", "four five", "six seven eight nine"]
    waves, lengths = torch.randn(3, 8000) * 0.1, torch.tensor([8000, 6000, 7000])
    with torch.no_grad():
        heard = model.transcribe(waves, lengths)
        for part in (slice(0, 2), slice(2, 3)):  # two batches: scores over the split, not averaged per batch
            model.test_metrics.update(heard[part], said[part])
    scores = model.test_metrics.compute()
    assert scores["test/wer"].item() == pytest.approx(jiwer.wer(said, heard), abs=1e-6)
    assert scores["test/cer"].item() == pytest.approx(jiwer.cer(said, heard), abs=1e-6)


def _trained(log_dir: Path, model: str) -> Path:
    from dlforge.tasks.train import train

    overrides = [f"model={model}", "debug=limit_batches", "logger=none", "trainer.max_epochs=1"]
    run_dir = log_dir / model
    train(job_config(compose("train", [*overrides, *small_batches(*overrides), f"paths.log_dir={log_dir}"], run_dir)))
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("model", ["bigru_ctc", "kws"])
def test_transcribe_reads_any_rate_and_scores_against_references(model, tmp_path: Path):
    from dlforge.tasks.transcribe import main

    checkpoint = _trained(tmp_path, model)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.random.default_rng(0).normal(0, 0.1, (44100, 2)).astype(np.float32), 44100)  # stereo
    reference = "four two" if model == "bigru_ctc" else "left"
    out_dir = tmp_path / "transcribe"
    out_dir.mkdir()
    overrides = [f"ckpt_path={checkpoint}", f"audio=[{clip},{clip}]", f"references=[{reference},{reference}]"]
    outputs = main(job_config(compose("transcribe", overrides, out_dir)))
    assert len(outputs) == 2 and outputs[0] == outputs[1]  # the same file, the same output
    metrics = read_metrics(out_dir)
    if model == "bigru_ctc":
        assert metrics["wer"] == pytest.approx(jiwer.wer([reference] * 2, outputs))
    else:
        assert metrics["acc"] == (1.0 if outputs[0] == "left" else 0.0)
    rows = (out_dir / "transcripts.tsv").read_text().splitlines()
    assert rows[1].split("\t") == [str(clip), outputs[0], reference]

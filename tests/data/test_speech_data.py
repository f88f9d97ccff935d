"""Speech data: the synthesised sets (speaker-disjoint splits, their layouts, determinism), the Speech Commands
and LibriSpeech readers on small files written here in those layouts, their one-line errors, and the log-mel
features of the nets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from dlforge.data.audio import ALPHABET, KeywordData, TranscriptData, decode, encode
from dlforge.data.sources.speech import (
    KEYWORDS,
    SAMPLE_RATE,
    LibriSpeech,
    SpeechCommands,
    SpokenCommands,
    SpokenDigits,
    synthesise,
    voices,
)
from dlforge.errors import DataError
from dlforge.nets.audio.features import LogMel, mel_filterbank


def tone(hz: float, seconds: float = 0.5, rate: int = SAMPLE_RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def test_no_voice_speaks_in_two_splits():
    splits = {split: set(voices(split, None)) for split in ("train", "val", "test")}
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    variants = {split: {voice.split("+")[-1] for voice in names} for split, names in splits.items()}
    assert not variants["train"] & (variants["val"] | variants["test"])  # a held-out timbre in no accent


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """One voice per split of both synthesised sets."""
    root = tmp_path_factory.mktemp("speech")
    SpokenCommands(renditions=1, unknown_words=1, voices_per_split=1).prepare(root, False)
    SpokenDigits(utterances=2, voices_per_split=1).prepare(root, False)
    return root


def test_spoken_commands_are_one_second_clips_in_the_speech_commands_layout(spoken: Path):
    source = SpokenCommands(renditions=1, unknown_words=1, voices_per_split=1)
    directory = source.directory(spoken)
    meta = json.loads((directory / "meta.json").read_text())
    for split, listing in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        listed = (directory / listing).read_text().split()
        speakers = {name.split("/")[1].split("_nohash_")[0] for name in listed}
        assert speakers == {voice.replace("espeak:", "").replace("+", "-") for voice in meta["voices"][split]}
        assert len(listed) == len(KEYWORDS) + 2  # each keyword, one other word, one silence
    data = KeywordData(source, str(spoken), eval_batch_size=4, num_workers=0)
    data.setup()
    assert [len(data.splits[split]) for split in ("train", "val", "test")] == [12, 12, 12]
    waves, labels = next(iter(data.test_dataloader()))
    assert waves.shape == (4, SAMPLE_RATE) and waves.abs().max() <= 1
    assert sorted(label for _, label in data.splits["test"].items) == list(range(12))


def test_synthesis_follows_its_seed(tmp_path: Path):
    same = [synthesise("espeak:en-us+male1", "left", np.random.default_rng(3), tmp_path) for _ in range(2)]
    other = synthesise("espeak:en-us+male1", "left", np.random.default_rng(4), tmp_path)
    assert np.array_equal(*same) and not (len(other) == len(same[0]) and np.array_equal(other, same[0]))


def test_spoken_digits_are_transcribed_in_the_librispeech_layout(spoken: Path):
    source = SpokenDigits(utterances=2, voices_per_split=1)
    utterances = source.transcribed_split(spoken, "test")
    assert len(utterances) == 2 and all(path.suffix == ".flac" for path, _ in utterances)
    for path, text in utterances:
        assert 3 <= len(text.split()) <= 7 and set(text) <= set(ALPHABET)
        assert soundfile.info(path).samplerate == SAMPLE_RATE
    data = TranscriptData(source, str(spoken), eval_batch_size=2, num_workers=0)
    data.setup()
    waves, lengths, targets, target_lengths = next(iter(data.test_dataloader()))
    assert waves.shape == (2, int(lengths.max())) and targets.shape == (2, int(target_lengths.max()))
    assert [decode(t[:n].tolist()) for t, n in zip(targets, target_lengths)] == [text for _, text in utterances]


def write_wav(path: Path, wave: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wave, rate)
    return path


def test_speech_commands_reader_splits_by_lists_and_maps_other_words_to_unknown(tmp_path: Path):
    for name in ("yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/c_nohash_0.wav", "bed/d_nohash_0.wav",
                 "_silence_/e_nohash_0.wav", "_background_noise_/white_noise.wav"):  # fmt: skip
        write_wav(tmp_path / name, tone(440, 1.2))
    (tmp_path / "validation_list.txt").write_text("no/c_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("yes/b_nohash_0.wav\nbed/d_nohash_0.wav\n")
    source = SpeechCommands(str(tmp_path))
    source.prepare(tmp_path, False)
    named = {
        split: [(path.relative_to(tmp_path).as_posix(), source.classes[label]) for path, label in clips]
        for split, clips in ((split, source.keyword_split(tmp_path, split)) for split in ("train", "val", "test"))
    }
    assert named == {
        "train": [("_silence_/e_nohash_0.wav", "_silence_"), ("yes/a_nohash_0.wav", "yes")],
        "val": [("no/c_nohash_0.wav", "no")],
        "test": [("bed/d_nohash_0.wav", "_unknown_"), ("yes/b_nohash_0.wav", "yes")],
    }
    data = KeywordData(source, str(tmp_path), num_workers=0)
    data.setup()
    assert data.splits["train"][1][0].shape == (SAMPLE_RATE,)  # 1.2 s cut to the clip length


def librispeech(tmp_path: Path, lines: list[str]) -> Path:
    for split in ("train-clean-100", "dev-clean", "test-clean"):
        chapter = tmp_path / split / "19" / "198"
        for line in lines:
            write_wav(chapter / f"{line.split(' ')[0]}.flac", tone(300))
        (chapter / "19-198.trans.txt").write_text("".join(f"{line}\n" for line in lines))
    return tmp_path


def test_librispeech_reader(tmp_path: Path):
    source = LibriSpeech(str(librispeech(tmp_path, ["19-198-0000 NORTHANGER ABBEY", "19-198-0001 IT'S LATE"])))
    source.prepare(tmp_path, False)
    assert [(path.name, text) for path, text in source.transcribed_split(tmp_path, "val")] == [
        ("19-198-0000.flac", "northanger abbey"),
        ("19-198-0001.flac", "it's late"),
    ]
    assert decode(encode("it's late")) == "it's late"


def test_an_empty_transcript_is_one_line_naming_file_and_line(tmp_path: Path):
    source = LibriSpeech(str(librispeech(tmp_path, ["19-198-0000 NORTHANGER ABBEY", "19-198-0001"])))
    with pytest.raises(
        DataError, match=r"^\S*test-clean/19/198/19-198\.trans\.txt:2: empty transcript for 19-198-0001$"
    ):
        source.transcribed_split(tmp_path, "test")


def test_a_file_that_is_not_audio_is_one_line_naming_it(tmp_path: Path):
    source = LibriSpeech(str(librispeech(tmp_path, ["19-198-0000 NORTHANGER ABBEY"])))
    bad = tmp_path / "test-clean" / "19" / "198" / "19-198-0000.flac"
    bad.write_text("not audio at all")
    data = TranscriptData(source, str(tmp_path), num_workers=0)
    data.setup()
    with pytest.raises(DataError) as raised:
        data.splits["test"][0]
    assert str(raised.value).startswith(f"{bad} is unreadable or corrupt") and "\n" not in str(raised.value)
    write_wav(bad, tone(300, rate=8000), 8000)
    with pytest.raises(DataError, match="sampled at 8000 Hz; the speech models take 16000 Hz"):
        data.splits["test"][0]


def test_mel_filterbank_is_htk_triangles_and_a_tone_lights_its_band():
    bank = mel_filterbank(201, 40, SAMPLE_RATE)
    assert bank.shape == (201, 40) and bank.min() == 0 and math.isclose(float(bank.max()), 1.0, abs_tol=0.05)
    centres = bank.argmax(0) * SAMPLE_RATE / 400  # Hz of each filter's peak bin (bins 40 Hz apart)
    mels = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)[1:-1]  # HTK: equally spaced in mels up to 8 kHz
    assert np.abs(centres.numpy() - 700 * (10 ** (mels / 2595) - 1)).max() < 40  # within a bin
    features = LogMel(40, freq_masks=0, time_masks=0).eval()
    for hz in (300.0, 2000.0):
        energies = features(torch.from_numpy(tone(hz))[None]).mean(-1)[0]
        assert abs(float(centres[energies.argmax()]) - hz) < 0.15 * hz


def test_specaugment_masks_in_training_only():
    features = LogMel(40, freq_masks=2, freq_mask_width=8, time_masks=2, time_mask_width=10)
    waves = torch.randn(8, SAMPLE_RATE)
    features.eval()
    assert torch.equal(features(waves), features(waves))
    features.train()
    torch.manual_seed(0)
    masked = features(waves)
    assert (masked == 0).any(dim=2).any() and (masked == 0).all(dim=1).any()  # whole bands and whole frames

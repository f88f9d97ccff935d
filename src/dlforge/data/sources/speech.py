"""Speech: keyword clips and transcribed utterances, synthesised offline or brought by the user.

Synthesised sets (`SpokenCommands`, `SpokenDigits`) are spoken by Debian's `espeak-ng` (accents x voice
variants) and `flite` (its voices), at random speeds and pitches, then augmented once, when written: a random
time shift, a simple reverb (an exponentially decaying noise impulse response) on half of the clips, coloured
noise at 5-30 dB SNR and a random level. Whole voices are held out: the val and test splits are spoken by
voice variants (and flite voices) that no training clip uses, so a score on them is a score on unheard
speakers. Everything follows from `seed`; clips are 16 kHz mono.

They are written in the layouts of the public sets, and read back by the same code as a user's copy:
  Speech Commands  `<word>/<speaker>_nohash_<n>.wav`, `validation_list.txt`, `testing_list.txt` (the rest
                   trains); words outside the keywords are "_unknown_", clips under `_silence_/` are
                   "_silence_" (the public set's `_background_noise_/` long recordings are not read)
  LibriSpeech      `<split>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac` with one
                   `<speaker>-<chapter>.trans.txt` per chapter, lines `<utterance id> <TRANSCRIPT>`
plus `meta.json`: the settings, the voices of each split and the synthesisers' versions (and for the digits
LibriSpeech's SPEAKERS.TXT: each speaker's split).
"""

from __future__ import annotations

import abc
import json
import logging
import multiprocessing
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np

from dlforge.constraints import Positive
from dlforge.data.files import made_with, prepare_once, reading, staged_dir
from dlforge.errors import DataError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
# Speech Commands' auxiliary words: spoken, but none of the keywords
OTHER_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "learn", "follow")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_STRING_LENGTHS = (3, 7)
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# espeak-ng voice variants (timbre, pitch range) and flite voices of each split: no voice speaks in two splits
VOICES = {
    "train": {
        "espeak": ("male1", "male2", "male3", "male4", "male5", "male8", "female1", "female2", "female5", "klatt",
                   "klatt3", "croak"),
        "flite": ("kal16", "slt"),
    },
    "val": {"espeak": ("male6", "female3"), "flite": ("rms",)},
    "test": {"espeak": ("male7", "female4"), "flite": ("awb",)},
}  # fmt: skip
SPLIT_DIRS = {"train": "train", "val": "dev", "test": "test"}  # LibriSpeech-style split dirs of SpokenDigits
VERSION = 1  # of the generator: a change to what it draws makes the set anew


def voices(split: str, limit: int | None) -> list[str]:
    """The split's voices as `espeak:<accent>+<variant>` and `flite:<voice>`, the first `limit` if set."""
    names = [f"espeak:{accent}+{variant}" for variant in VOICES[split]["espeak"] for accent in ACCENTS]
    names += [f"flite:{voice}" for voice in VOICES[split]["flite"]]
    if limit is not None:  # spread over the variants, accents and flite rather than the first variant's accents
        names = [names[i] for i in np.linspace(0, len(names) - 1, min(limit, len(names))).round().astype(int)]
    return names


def speaker_id(voice: str) -> str:
    """A voice as a file-name part without `_` (which Speech Commands' names split on) or `+`/`:`."""
    return voice.replace("espeak:", "").replace("flite:", "flite-").replace("+", "-")


def synthesise(voice: str, text: str, rng: np.random.Generator, workdir: Path) -> np.ndarray:
    """`text` spoken by `voice` at a random speed (and, for espeak-ng, pitch): float32 at 16 kHz."""
    import soundfile
    from scipy.signal import resample_poly

    out = workdir / "utterance.wav"
    engine, name = voice.split(":")
    if engine == "espeak":
        speed, pitch = int(rng.integers(130, 200)), int(rng.integers(25, 75))
        command = ["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch), "-w", str(out), text]
    else:
        stretch = rng.uniform(0.8, 1.25)
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    wave, rate = soundfile.read(out, dtype="float32")
    if rate != SAMPLE_RATE:
        divisor = np.gcd(rate, SAMPLE_RATE)
        wave = resample_poly(wave, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    return trimmed(wave)


def trimmed(wave: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Without the leading and trailing near-silence the synthesisers pad with."""
    loud = np.flatnonzero(np.abs(wave) > threshold * np.abs(wave).max())
    return wave[loud[0] : loud[-1] + 1] if len(loud) else wave


def coloured_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise (power falling as f^0, f^-1, f^-2), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.maximum(np.fft.rfftfreq(length), 1 / length)
    noise = np.fft.irfft(spectrum / frequencies ** (rng.choice([0.0, 0.5, 1.0])), length)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def augmented(wave: np.ndarray, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
    """`wave` placed at a random offset (in a clip of `length` samples, cropped if longer; else with 0-0.3 s
    of silence either side), reverberated on half of the draws, with coloured noise at 5-30 dB SNR, at a
    random peak level."""
    from scipy.signal import fftconvolve

    if rng.random() < 0.5:  # a room: direct sound, then a decaying tail of reflections over 0.25 s
        decay = rng.uniform(0.02, 0.08) * SAMPLE_RATE
        response = rng.standard_normal(SAMPLE_RATE // 4) * np.exp(-np.arange(SAMPLE_RATE // 4) / decay) * 0.3
        response[0] = 1.0
        wave = fftconvolve(wave, response)[: len(wave) + SAMPLE_RATE // 8]
    if length is None:
        before, after = rng.integers(0, int(0.3 * SAMPLE_RATE), 2)
        length = before + len(wave) + after
    else:
        before = rng.integers(0, max(length - len(wave), 0) + 1)
        wave = wave[:length]
    clip = np.zeros(length, np.float32)
    clip[before : before + len(wave)] = wave
    speech_rms = np.sqrt(np.mean(wave**2)) if len(wave) else 1.0
    clip += coloured_noise(length, rng) * speech_rms * 10 ** (-rng.uniform(5, 30) / 20)
    return (clip * rng.uniform(0.1, 0.9) / (np.abs(clip).max() + 1e-12)).astype(np.float32)


def silence(rng: np.random.Generator) -> np.ndarray:
    """One second of background noise alone, at a low random level."""
    return (coloured_noise(SAMPLE_RATE, rng) * rng.uniform(0.001, 0.05)).astype(np.float32)


def read_audio(path: Path) -> np.ndarray:
    """A mono float32 16 kHz waveform; anything else, or a file that is no audio, is a DataError naming it."""
    import soundfile

    with reading(path):
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sampled at {rate} Hz; the speech models take {SAMPLE_RATE} Hz (resample it)")
    return wave.mean(axis=1)


def read_resampled(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A mono float32 waveform at `rate`, resampled from the file's own (polyphase filtering)."""
    import soundfile
    from scipy.signal import resample_poly

    with reading(path):
        wave, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if file_rate != rate:
        divisor = np.gcd(file_rate, rate)
        wave = resample_poly(wave, rate // divisor, file_rate // divisor).astype(np.float32)
    return wave


class SynthesisedSpeech(abc.ABC):
    """What the synthesised sets share: a directory per settings, made once under the preparing lock.
    `voices_per_split` takes only that many voices of each split (a small set, for tests)."""

    name: str
    needs_download = True  # made by Debian's espeak-ng and flite, not from Python packages: not in `all=true`

    def __init__(self, seed: int, voices_per_split: int | None):
        self.seed = seed
        self.voices_per_split = voices_per_split

    def directory(self, root: Path) -> Path:
        name = self.name + (f"-voices{self.voices_per_split}" if self.voices_per_split else "")
        return Path(root) / (name + (f"-seed{self.seed}" if self.seed else ""))

    def settings(self) -> dict:
        return {"version": VERSION, "seed": self.seed, "voices_per_split": self.voices_per_split}

    def prepare(self, root: Path, download: bool) -> None:
        directory = self.directory(root)
        prepare_once(directory, lambda: made_with(directory, self.settings()), lambda: self._write(directory))

    def _write(self, directory: Path) -> None:
        started = time.perf_counter()
        with staged_dir(directory) as staged:
            splits = {split: voices(split, self.voices_per_split) for split in SPLIT_DIRS}
            jobs = [(staged, split, voice, self.seed) for split, names in splits.items() for voice in names]
            # every voice's clips follow from (seed, voice) alone: two processes make them in any order
            with multiprocessing.get_context("fork").Pool(2) as pool:
                written = pool.map(self.write_voice, jobs)
            self.finish(staged, splits, written)
            meta = {"settings": self.settings(), "voices": splits, "synthesisers": synthesiser_versions()}
            (staged / "meta.json").write_text(json.dumps(meta, indent=2))
        log.info(f"{self.name}: {len(jobs)} voices written to {directory} in {time.perf_counter() - started:.0f} s")

    def checked(self, root: Path) -> Path:
        directory = self.directory(root)
        if not made_with(directory, self.settings()):
            raise DataError(
                f"{directory} holds no {self.name} made with data.source's settings: "
                f"`python src/prepare.py data={self.name}` (with the same settings) makes it"
            )
        return directory

    @abc.abstractmethod
    def write_voice(self, job: tuple) -> list[str]:
        """Writes the clips of one voice of a split, `job` = (staged dir, split, voice, seed); returns their names."""

    @abc.abstractmethod
    def finish(self, staged: Path, splits: dict[str, list[str]], written: list[list[str]]) -> None:
        """Writes what lists the clips of every voice (`written`, in the order of `splits`' voices)."""


def synthesiser_versions() -> dict[str, str]:
    import importlib.metadata

    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    flite = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout.strip()
    return {"espeak-ng": espeak, "flite": " ".join(flite.split()), "soundfile": importlib.metadata.version("soundfile")}


def voice_rng(seed: int, voice: str) -> np.random.Generator:
    return np.random.default_rng([seed, *voice.encode()])


class SpokenCommands(SynthesisedSpeech):
    """The ten Speech Commands keywords, other words ("_unknown_") and background noise ("_silence_"),
    synthesised: per voice `renditions` clips of every keyword, `unknown_words` clips of other words and one
    of silence per rendition; 1 s each, in the Speech Commands layout (module docstring)."""

    name = "spoken_commands"

    def __init__(
        self,
        renditions: Annotated[int, Positive] = 2,
        unknown_words: Annotated[int, Positive] = 3,
        seed: int = 0,
        voices_per_split: Annotated[int, Positive] | None = None,
    ):
        super().__init__(seed, voices_per_split)
        self.renditions = renditions
        self.unknown_words = unknown_words
        self.classes = [*KEYWORDS, UNKNOWN, SILENCE]

    def settings(self) -> dict:
        return {**super().settings(), "renditions": self.renditions, "unknown_words": self.unknown_words}

    def write_voice(self, job: tuple) -> list[str]:
        import soundfile

        staged, _, voice, seed = job
        rng, speaker, written = voice_rng(seed, voice), speaker_id(voice), []
        with tempfile.TemporaryDirectory() as workdir:
            for rendition in range(self.renditions):
                words = [*KEYWORDS, *rng.choice(OTHER_WORDS, self.unknown_words, replace=False), SILENCE]
                for word in words:
                    if word == SILENCE:
                        clip = silence(rng)
                    else:
                        clip = augmented(synthesise(voice, word, rng, Path(workdir)), rng, SAMPLE_RATE)
                    name = f"{word}/{speaker}_nohash_{rendition}.wav"
                    (staged / word).mkdir(exist_ok=True)
                    soundfile.write(staged / name, clip, SAMPLE_RATE, subtype="PCM_16")
                    written.append(name)
        return written

    def finish(self, staged: Path, splits: dict[str, list[str]], written: list[list[str]]) -> None:
        voice_splits = [split for split, names in splits.items() for _ in names]  # the order of `written`
        by_split = {"val": [], "test": []}
        for split, clips in zip(voice_splits, written):
            if split in by_split:
                by_split[split] += clips
        (staged / "validation_list.txt").write_text("".join(f"{name}\n" for name in sorted(by_split["val"])))
        (staged / "testing_list.txt").write_text("".join(f"{name}\n" for name in sorted(by_split["test"])))

    def keyword_split(self, root: Path, split: str) -> list[tuple[Path, int]]:
        return speech_commands_split(self.checked(root), split, self.classes)


class SpeechCommands:
    """Your copy of Google's Speech Commands (v0.01 or v0.02) at `path`: the ten keywords, every other word as
    "_unknown_", clips under `_silence_/` (if you cut some from `_background_noise_/`) as "_silence_"."""

    name = "speech_commands"
    needs_download = True  # the files are yours to bring

    def __init__(self, path: str):
        self.path = Path(path)
        self.classes = [*KEYWORDS, UNKNOWN, SILENCE]

    def prepare(self, root: Path, download: bool) -> None:
        if not (self.path / "testing_list.txt").is_file():
            raise DataError(f"{self.path}: no testing_list.txt; data.source.path must be a Speech Commands dir")

    def keyword_split(self, root: Path, split: str) -> list[tuple[Path, int]]:
        return speech_commands_split(self.path, split, self.classes)


def speech_commands_split(directory: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    """(clip, class index) of a split in the Speech Commands layout, sorted by path."""
    listed = {}
    for name, listing in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        with reading(directory / listing):
            listed[name] = set((directory / listing).read_text().split())
    if split == "train":
        names = (
            {
                str(path.relative_to(directory))
                for path in directory.glob("*/*.wav")
                if path.parent.name != "_background_noise_"
            }
            - listed["val"]
            - listed["test"]
        )
    else:
        names = listed[split]
    index = {name: position for position, name in enumerate(classes)}
    return [(directory / name, index.get(name.split("/")[0], index[UNKNOWN])) for name in sorted(names)]


class SpokenDigits(SynthesisedSpeech):
    """Strings of 3-7 spoken digits ("four one nine"), `utterances` per voice, transcribed, in the
    LibriSpeech layout (module docstring; split dirs train, dev, test)."""

    name = "spoken_digits"

    def __init__(
        self,
        utterances: Annotated[int, Positive] = 16,
        seed: int = 0,
        voices_per_split: Annotated[int, Positive] | None = None,
    ):
        super().__init__(seed, voices_per_split)
        self.utterances = utterances

    def settings(self) -> dict:
        return {**super().settings(), "utterances": self.utterances}

    def write_voice(self, job: tuple) -> list[str]:
        import soundfile

        staged, split, voice, seed = job
        rng, speaker = voice_rng(seed, voice), speaker_id(voice)
        chapter = staged / SPLIT_DIRS[split] / speaker / "0"
        chapter.mkdir(parents=True)
        lines = []
        with tempfile.TemporaryDirectory() as workdir:
            for n in range(self.utterances):
                words = " ".join(rng.choice(DIGITS, rng.integers(DIGIT_STRING_LENGTHS[0], DIGIT_STRING_LENGTHS[1] + 1)))
                clip = augmented(synthesise(voice, words, rng, Path(workdir)), rng)
                soundfile.write(chapter / f"{speaker}-0-{n}.flac", clip, SAMPLE_RATE, subtype="PCM_16")
                lines.append(f"{speaker}-0-{n} {words.upper()}\n")
        (chapter / f"{speaker}-0.trans.txt").write_text("".join(lines))
        return lines

    def finish(self, staged: Path, splits: dict[str, list[str]], written: list[list[str]]) -> None:
        """LibriSpeech's SPEAKERS.TXT: which split each speaker (voice) is in (transcripts are per chapter)."""
        lines = [
            f"{speaker_id(voice)} | {SPLIT_DIRS[split]} | {voice}\n"
            for split, names in splits.items()
            for voice in names
        ]
        (staged / "SPEAKERS.TXT").write_text(";ID | SUBSET | VOICE\n" + "".join(lines))

    def transcribed_split(self, root: Path, split: str) -> list[tuple[Path, str]]:
        return librispeech_split(self.checked(root) / SPLIT_DIRS[split])


class LibriSpeech:
    """Your copy of LibriSpeech (or any set in its layout) under `path`: the split dirs named by `train`,
    `val` and `test` (e.g. train-clean-100, dev-clean, test-clean)."""

    name = "librispeech"
    needs_download = True  # the files are yours to bring

    def __init__(self, path: str, train: str = "train-clean-100", val: str = "dev-clean", test: str = "test-clean"):
        self.path = Path(path)
        self.split_dirs = {"train": train, "val": val, "test": test}

    def prepare(self, root: Path, download: bool) -> None:
        missing = [name for name in self.split_dirs.values() if not (self.path / name).is_dir()]
        if missing:
            raise DataError(f"{self.path}: no split dir {', '.join(missing)} (data.source.train/val/test name them)")

    def transcribed_split(self, root: Path, split: str) -> list[tuple[Path, str]]:
        return librispeech_split(self.path / self.split_dirs[split])


def librispeech_split(directory: Path) -> list[tuple[Path, str]]:
    """(audio file, lower-case transcript) of every utterance under `directory`, in path order. An empty
    transcript, or a listed utterance without its .flac (or .wav), is a DataError naming the file and line."""
    utterances = []
    for listing in sorted(directory.glob("*/*/*.trans.txt")):
        with reading(listing):
            lines = listing.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            utterance, _, text = line.strip().partition(" ")
            if not text.strip():
                raise DataError(f"{listing}:{number}: empty transcript for {utterance or 'an empty line'}")
            audio = next(
                (path for ext in ("flac", "wav") if (path := listing.parent / f"{utterance}.{ext}").is_file()), None
            )
            if audio is None:
                raise DataError(f"{listing}:{number}: no {utterance}.flac or .wav beside it")
            utterances.append((audio, " ".join(text.lower().split())))
    if not utterances:
        raise DataError(f"{directory}: no <speaker>/<chapter>/*.trans.txt transcripts (the LibriSpeech layout)")
    return utterances

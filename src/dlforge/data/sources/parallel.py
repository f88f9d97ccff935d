"""Sentence pairs for translation: each source gives its train, val and test pairs (source text, target text).

NumberPhrases (offline, deterministic): English number phrases and their German or French form, written by
  PyPI's `num2words`: cardinals, ordinals, years and euro amounts, whose translation reorders the parts
  ("twenty-one" -> "einundzwanzig", "ninety-seven" -> "quatre-vingt-dix-sept").
ParallelFiles (yours): pairs from aligned text files (`train.en` / `train.fr`, line n of one translating line n
  of the other), TSV (source, tab, target), JSONL or parquet as Hugging Face datasets write them (a
  `translation` record of language codes, or plain columns).
GettextCatalogs (offline, from this machine): the human translations of installed programs' messages in their
  gettext catalogs (`<locale_dir>/<language>/LC_MESSAGES/*.mo`), cleaned and split by catalog.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from dlforge.data.files import prepare_once, reading, staged_dir
from dlforge.data.sources import Source
from dlforge.errors import DataError

Pairs = tuple[list[str], list[str]]  # source texts, target texts
PAIRS_FILE, MANIFEST_FILE = "pairs.json", "manifest.json"


class ParallelSource(Source, Protocol):
    """What ParallelData asks of a set of sentence pairs."""

    def prepare(self, root: Path, download: bool) -> None:
        """Write or fetch the pairs' files under `root`, unless they are there."""
        ...

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        """The "train", "val" and "test" pairs."""
        ...

    def manifest(self, root: Path) -> dict[str, Any]:
        """What the pairs were made from (catalogs and package versions, files, library versions), as plain data."""
        ...


def prepare_pairs(directory: Path, make: Callable[[], tuple[dict[str, Pairs], dict[str, Any]]]) -> None:
    """Write the pairs and manifest that `make` returns into `directory`, unless it holds them: one process
    at a time, the dir replaced whole (`dlforge.data.files`)."""

    def write() -> None:
        splits, manifest = make()
        with staged_dir(directory) as staged:
            plain = {split: {"source": sources, "target": targets} for split, (sources, targets) in splits.items()}
            (staged / PAIRS_FILE).write_text(json.dumps(plain, ensure_ascii=False))
            (staged / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))

    prepare_once(directory, (directory / PAIRS_FILE).is_file, write)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    with reading(path):
        return json.loads(path.read_text())


def read_pairs(directory: Path) -> dict[str, Pairs]:
    path = directory / PAIRS_FILE
    with reading(path):
        plain = json.loads(path.read_text())
        return {split: (plain[split]["source"], plain[split]["target"]) for split in ("train", "val", "test")}


NUMBER_KINDS = ("cardinal", "ordinal", "year", "currency")


def number(kind: str, generator: np.random.Generator) -> int | float:
    """A number of `kind`: cardinals up to 10 million (log-uniform in their count of digits, so millions, which
    are words of their own in German and French, are common), ordinals up to 100,000, years 1100-2099, euro
    amounts up to 10,000 with cents."""
    if kind == "cardinal":
        return int(generator.integers(0, 10 ** int(generator.integers(1, 8))))
    if kind == "ordinal":
        return int(generator.integers(1, 10 ** int(generator.integers(1, 6))))
    if kind == "year":
        return int(generator.integers(1100, 2100))
    return round(float(generator.integers(1, 10 ** int(generator.integers(1, 7)))) / 100, 2)


class NumberPhrases:
    """`train_size`, `val_size` and `test_size` distinct English phrases and their translations, drawn from a
    generator seeded by `seed`: the same pairs on every machine (given num2words' version). A phrase is in one
    split only."""

    needs_download = True  # made at setup (num2words), never downloaded, but kept out of data.dvc and `all=true`

    def __init__(
        self,
        language: Literal["de", "fr"] = "de",
        train_size: int = 20000,
        val_size: int = 500,
        test_size: int = 1000,
        seed: int = 0,
    ):
        self.language = language
        self.sizes = {"test": test_size, "val": val_size, "train": train_size}
        self.seed = seed
        self.name = f"numbers_en_{language}"

    def directory(self, root: Path) -> Path:
        sizes = "-".join(f"{split}{size}" for split, size in self.sizes.items())
        return root / self.name / f"seed{self.seed}-{sizes}"

    def prepare(self, root: Path, download: bool) -> None:
        """The pairs, written once: num2words takes ~10 s for the 21,500 default pairs."""
        prepare_pairs(self.directory(root), lambda: (self._pairs(), {"num2words": version("num2words")}))

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        self.prepare(root, download)
        return read_pairs(self.directory(root))

    def manifest(self, root: Path) -> dict[str, Any]:
        return read_manifest(self.directory(root))

    def _pairs(self) -> dict[str, Pairs]:
        from num2words import num2words

        generator = np.random.default_rng(self.seed)
        pairs: dict[str, str] = {}
        while len(pairs) < sum(self.sizes.values()):
            kind = NUMBER_KINDS[int(generator.integers(len(NUMBER_KINDS)))]
            value = number(kind, generator)
            pairs.setdefault(num2words(value, lang="en", to=kind), num2words(value, lang=self.language, to=kind))
        phrases, splits, start = list(pairs), {}, 0
        for split, size in self.sizes.items():
            chosen = phrases[start : start + size]
            splits[split] = (chosen, [pairs[phrase] for phrase in chosen])
            start += size
        return splits


# printf, Python and brace placeholders; markup (tags, entities) and escapes: not sentences a translator wrote as text
PLACEHOLDER = re.compile(r"%[-+ #0-9.*$lhqjzt]*[a-zA-Z%]|%\(|\{[^}]*\}|\$\{|<[^>]*>|&[#\w]+;|\\|\n|\t")
MNEMONIC = re.compile(r"_(?=\w)|&(?=\w)")  # the underscore or ampersand before a menu item's access key


def clean(text: str) -> str:
    return " ".join(MNEMONIC.sub("", text).split())


class GettextCatalogs:
    """English messages and their `language` translations from every catalog of `locale_dir/<language>/
    LC_MESSAGES`, read with Python's `gettext`: a message's context (msgctxt) is stripped, plural messages give
    their singular form, access-key marks are removed; pairs are kept when both sides have `min_words` to
    `max_words` words and neither holds a format placeholder, markup or an escape, and the translation differs
    from the English. A message is kept once (its first catalog in name order). A catalog that gettext cannot
    read (a wrong charset) is left out and listed in the manifest under `unreadable`.

    Whole catalogs go to test and val (drawn with `seed` until each has `test_fraction` and `val_fraction` of
    the pairs), so near-duplicates within a program's messages cannot leak from train into test; a message
    also found in a train catalog is dropped from val and test. `manifest.json` beside the prepared pairs
    lists each catalog with its Debian package and version (dpkg) and its split; `sha256` names the corpus.
    """

    needs_download = True  # made from this machine's Debian packages, not Python's: not in data.dvc or `all=true`

    def __init__(
        self,
        language: str = "fr",
        locale_dir: str = "/usr/share/locale",
        min_words: int = 3,
        max_words: int = 25,
        val_fraction: float = 0.05,
        test_fraction: float = 0.1,
        seed: int = 0,
    ):
        self.language, self.locale_dir = language, Path(locale_dir)
        self.words = (min_words, max_words)
        self.fractions = {"test": test_fraction, "val": val_fraction}
        self.seed = seed
        self.name = f"gettext_en_{language}"

    def catalogs(self) -> list[Path]:
        found = sorted((self.locale_dir / self.language / "LC_MESSAGES").glob("*.mo"))
        if not found:
            raise DataError(f"{self.locale_dir / self.language / 'LC_MESSAGES'}: no gettext catalogs (*.mo) found")
        return found

    def directory(self, root: Path) -> Path:
        """Named by what the corpus is made of: the catalog files (names, sizes, times) and the settings, so an
        installed or upgraded package makes a new corpus beside the old one."""
        stats = [(path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in self.catalogs()]
        key = json.dumps([stats, self.words, self.fractions, self.seed]).encode()
        return root / self.name / hashlib.sha256(key).hexdigest()[:12]

    def prepare(self, root: Path, download: bool) -> None:
        prepare_pairs(self.directory(root), self._pairs)

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        self.prepare(root, download)
        return read_pairs(self.directory(root))

    def manifest(self, root: Path) -> dict[str, Any]:
        return read_manifest(self.directory(root))

    def _messages(self, path: Path) -> dict[str, str]:
        """The catalog's cleaned pairs; raises OSError or UnicodeDecodeError for a catalog gettext cannot read."""
        import gettext

        with open(path, "rb") as file:
            catalog = gettext.GNUTranslations(file)._catalog
        messages = {}
        for key, translation in catalog.items():
            if isinstance(key, tuple):  # (msgid, plural index): the singular form only
                if key[1] != 0:
                    continue
                key = key[0]
            english, translated = clean(key.split("\x04")[-1]), clean(translation)
            if english and english != translated and all(self._fits(text) for text in (english, translated)):
                messages.setdefault(english, translated)
        return messages

    def _fits(self, text: str) -> bool:
        return self.words[0] <= len(text.split()) <= self.words[1] and not PLACEHOLDER.search(text)

    def _pairs(self) -> tuple[dict[str, Pairs], dict[str, Any]]:
        seen, per_catalog, skipped = set(), {}, {}
        for path in self.catalogs():
            try:
                messages = self._messages(path)
            except (OSError, UnicodeDecodeError) as error:  # Debian's German net-tools.mo is Latin-1 labelled UTF-8
                skipped[path.name] = " ".join(str(error).split())
                continue
            messages = {english: target for english, target in messages.items() if english not in seen}
            seen.update(messages)
            per_catalog[path.name] = messages
        total = sum(map(len, per_catalog.values()))
        order = sorted(per_catalog)
        random.Random(self.seed).shuffle(order)
        split_of, counts = {}, {"test": 0, "val": 0}
        for name in order:
            split = next((split for split in ("test", "val") if counts[split] < self.fractions[split] * total), "train")
            split_of[name] = split
            counts[split] = counts.get(split, 0) + len(per_catalog[name])
        splits = {split: ([], []) for split in ("train", "val", "test")}
        for name in sorted(per_catalog):
            for english, target in per_catalog[name].items():
                splits[split_of[name]][0].append(english)
                splits[split_of[name]][1].append(target)
        packages = debian_packages(self.catalogs())
        catalogs = {
            name: {"split": split_of[name], "pairs": len(per_catalog[name]), **packages.get(name, {})}
            for name in sorted(per_catalog)
        }
        counts = {split: len(sources) for split, (sources, _) in splits.items()}
        return splits, {"language": self.language, "pairs": counts, "catalogs": catalogs, "unreadable": skipped}


def debian_packages(paths: list[Path]) -> dict[str, dict[str, str]]:
    """File name -> the Debian package that installed it and its version (`dpkg -S`, `dpkg-query`); empty where
    dpkg is not there or owns none of them."""
    try:
        owners = subprocess.run(["dpkg", "-S", *map(str, paths)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return {}
    package_of = {}
    for line in owners.splitlines():
        package, _, path = line.partition(": ")
        package_of[Path(path).name] = package.split(":")[0]  # without the architecture
    query = ["dpkg-query", "-W", "-f=${Package} ${Version}\n", *sorted(set(package_of.values()))]
    versions = dict(
        line.split(" ", 1) for line in subprocess.run(query, capture_output=True, text=True).stdout.splitlines()
    )
    return {name: {"package": package, "version": versions.get(package, "")} for name, package in package_of.items()}


SplitFiles = str | list[str]  # one TSV/JSONL/parquet file, or the [source, target] aligned text files


class ParallelFiles:
    """The pairs of your files: `train` and `test` (and `val`, else `val_fraction` of train held out by `seed`),
    each either two aligned plain-text files [source, target] or one `.tsv`, `.jsonl` or `.parquet` file.
    JSONL and parquet rows hold `source_key` and `target_key`, either as fields or inside a `translation`
    record (Hugging Face's translation datasets: {"translation": {"en": ..., "fr": ...}}). Paths are relative to
    the data root unless absolute. A file that breaks the format is a one-line DataError naming it and the line."""

    needs_download = True  # the files are yours to bring: not made by `prepare.py all=true`

    def __init__(
        self,
        train: SplitFiles,
        test: SplitFiles,
        val: SplitFiles | None = None,
        val_fraction: float = 0.05,
        source_key: str = "en",
        target_key: str = "fr",
        seed: int = 0,
        name: str = "parallel_text",
    ):
        self.files = {"train": train, "val": val, "test": test}
        self.val_fraction, self.keys, self.seed, self.name = val_fraction, (source_key, target_key), seed, name

    def prepare(self, root: Path, download: bool) -> None:
        """Nothing to write: the files are read as they are."""

    def load(self, root: Path, download: bool) -> dict[str, Pairs]:
        splits = {split: self._read(root, files) for split, files in self.files.items() if files is not None}
        if "val" not in splits:
            order = list(range(len(splits["train"][0])))
            random.Random(self.seed).shuffle(order)
            held = set(order[: max(1, round(self.val_fraction * len(order)))])
            splits["val"], splits["train"] = (
                tuple([texts[i] for i in range(len(texts)) if (i in held) == keep] for texts in splits["train"])
                for keep in (True, False)
            )
        return splits

    def manifest(self, root: Path) -> dict[str, Any]:
        paths = [self._path(root, path) for files in self.files.values() if files for path in _as_list(files)]
        return {"files": {str(path): path.stat().st_size for path in paths}}

    def _path(self, root: Path, path: str) -> Path:
        resolved = Path(path) if Path(path).is_absolute() else root / path
        if not resolved.is_file():
            raise DataError(f"{resolved}: no such file")
        return resolved

    def _read(self, root: Path, files: SplitFiles) -> Pairs:
        paths = [self._path(root, path) for path in _as_list(files)]
        if len(paths) == 2:
            return aligned_lines(*paths)
        if len(paths) != 1:
            raise DataError(f"{files}: give one .tsv/.jsonl/.parquet file or two aligned text files")
        path = paths[0]
        readers = {".tsv": tsv_pairs, ".jsonl": lambda p: record_pairs(p, *self.keys), ".parquet": self._parquet}
        if path.suffix not in readers:
            raise DataError(f"{path}: not .tsv, .jsonl or .parquet; give aligned text files as a [source, target] list")
        return readers[path.suffix](path)

    def _parquet(self, path: Path) -> Pairs:
        import pyarrow.parquet

        with reading(path):
            rows = pyarrow.parquet.read_table(path).to_pylist()
        return _record_fields(path, rows, *self.keys, "row")


def _as_list(files: SplitFiles) -> list[str]:
    return [files] if isinstance(files, str) else list(files)


def _text(path: Path, number: int, text: str) -> str:
    """A non-empty side of a pair, stripped."""
    text = text.strip()
    if not text:
        raise DataError(f"{path} line {number} is empty: every line must hold a sentence")
    return text


def _lines(path: Path) -> list[str]:
    with reading(path):
        return path.read_text(encoding="utf-8").splitlines()


def aligned_lines(source_path: Path, target_path: Path) -> Pairs:
    sources, targets = _lines(source_path), _lines(target_path)
    if len(sources) != len(targets):
        shorter, longer = (source_path, target_path) if len(sources) < len(targets) else (target_path, source_path)
        line = min(len(sources), len(targets)) + 1
        raise DataError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: line {line} of {longer} "
            f"has no counterpart in {shorter}"
        )
    return (
        [_text(source_path, number, text) for number, text in enumerate(sources, 1)],
        [_text(target_path, number, text) for number, text in enumerate(targets, 1)],
    )


def tsv_pairs(path: Path) -> Pairs:
    sources, targets = [], []
    for number, line in enumerate(_lines(path), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path} line {number}: {len(fields)} tab-separated fields, need 2 (source, target)")
        sources.append(_text(path, number, fields[0]))
        targets.append(_text(path, number, fields[1]))
    return sources, targets


def record_pairs(path: Path, source_key: str, target_key: str) -> Pairs:
    rows = []
    for number, line in enumerate(_lines(path), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(f"{path} line {number}: not JSON ({error.msg})") from error
    return _record_fields(path, rows, source_key, target_key, "line")


def _record_fields(path: Path, rows: list, source_key: str, target_key: str, unit: str) -> Pairs:
    sources, targets = [], []
    for number, row in enumerate(rows, 1):
        record = row.get("translation", row) if isinstance(row, dict) else None
        if not isinstance(record, dict) or not all(
            isinstance(record.get(key), str) for key in (source_key, target_key)
        ):
            raise DataError(
                f"{path} {unit} {number}: no {source_key!r} and {target_key!r} texts (or a translation record of them)"
            )
        sources.append(_text(path, number, record[source_key]))
        targets.append(_text(path, number, record[target_key]))
    return sources, targets

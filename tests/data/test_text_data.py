"""Text data: corpora, memory-mapped token streams and their orderings, the tokenizer as the
datamodule's state, labelled texts for classification (pydoc topics, AG News's published CSVs)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import identical
from dlforge.data.sources import corpora
from dlforge.data.sources.corpora import PydocTopics, TinyShakespeare
from dlforge.data.sources.texts import PYDOC_TOPICS, AGNews, PydocParagraphs
from dlforge.data.text import ContiguousRows, LanguageModelData, RandomWindows
from dlforge.data.text_classification import TextClassificationData
from dlforge.data.tokenizers import (
    Tokenizer,
    train_tokenizer,
)
from dlforge.errors import DataError


def test_pydoc_corpus_is_real_text_joined_the_same_way_every_time(tmp_path):
    text = PydocTopics().text(tmp_path, download=False)
    assert len(text) > 300_000 and 'The "assert" statement' in text
    assert PydocTopics().text(tmp_path, download=False) == text


def test_tiny_shakespeare_reads_its_file_and_downloads_only_when_asked(tmp_path, monkeypatch):
    play = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    with pytest.raises(DataError, match="tiny_shakespeare not found at .* data.download=true"):
        TinyShakespeare().text(tmp_path, download=False)
    published = tmp_path / "published.txt"
    published.write_text(play)
    # The real download code, pointed at a local file instead of the published URL.
    monkeypatch.setattr(corpora, "TINY_SHAKESPEARE_URL", published.as_uri())
    assert TinyShakespeare().text(tmp_path / "data", download=True) == play
    assert (tmp_path / "data" / "tiny_shakespeare" / "input.txt").read_text() == play
    monkeypatch.setattr(corpora, "TINY_SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(DataError, match="could not download"):
        TinyShakespeare().text(tmp_path / "elsewhere", download=True)
    assert not list((tmp_path / "elsewhere" / "tiny_shakespeare").iterdir())  # no partial file left


def test_token_streams_are_memory_mapped_written_once_and_reused(tmp_path):
    data = LanguageModelData(PydocTopics(), root=str(tmp_path), vocab_size=128)
    data.setup("fit")
    directory = tmp_path / "pydoc_topics" / "char-128"
    assert data.prepared_dir == directory
    files = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in directory.iterdir()}
    assert set(files) == {"train.bin", "val.bin", "test.bin", "tokenizer.json", "meta.json"}
    assert all(isinstance(stream, np.memmap) and stream.dtype == np.uint16 for stream in data.streams.values())

    text = PydocTopics().text(tmp_path, download=False)
    parts = [data.tokenizer.decode(data.streams[split]) for split in ("train", "val", "test")]
    assert "".join(parts) == text  # the three contiguous parts, in order, nothing lost (no rare chars here)
    assert len(parts[1]) == pytest.approx(0.05 * len(text), abs=1) and data.chars_per_token["val"] == 1.0

    again = LanguageModelData(PydocTopics(), root=str(tmp_path), vocab_size=128)
    again.prepare_data()
    again.setup("fit")
    assert {
        path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in directory.iterdir()
    } == files  # not rewritten
    assert again.tokenizer == data.tokenizer

    bpe = LanguageModelData(PydocTopics(), root=str(tmp_path), tokenizer="bpe", vocab_size=400)
    bpe.setup("fit")
    assert (tmp_path / "pydoc_topics" / "bpe-400" / "train.bin").is_file()
    assert 1.5 < bpe.chars_per_token["train"] < 4


def test_contiguous_rows_continue_from_batch_to_batch_and_split_between_ranks():
    stream = np.arange(1000, dtype=np.uint32)
    per_rank = [list(ContiguousRows(stream, block_size=8, batch_size=3, rank=rank, world_size=2)) for rank in (0, 1)]
    rows = {}
    for batches in per_rank:
        assert len(batches) == (1000 // 6 - 1) // 8
        for inputs, targets in batches:
            assert inputs.shape == targets.shape == (3, 8) and inputs.dtype == torch.int64
            assert torch.equal(targets[:, :-1], inputs[:, 1:])
        inputs = torch.cat([batch[0] for batch in batches], dim=1)  # each row read batch after batch
        for row in inputs:
            rows[int(row[0])] = row
            assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + len(row)))  # no gap, no repeat
    assert sorted(rows) == [i * (1000 // 6) for i in range(6)]  # 6 distinct rows over both ranks


def test_random_windows_follow_seed_and_epoch_and_ranks_share_each_batch():
    stream = np.arange(10_000, dtype=np.uint16)

    def batches(seed, epoch, rank=0, world_size=1):
        windows = RandomWindows(stream, 16, 4 // world_size, 10, seed, lambda: epoch, rank, world_size)
        return [inputs for inputs, _ in windows]

    first = batches(seed=0, epoch=0)
    assert len(first) == 10 and first[0].shape == (4, 16)
    assert identical(first, batches(0, 0))
    # 2 processes: 10 batches each, of 2 windows; together the windows of one process's batches
    halves = batches(0, 0, rank=0, world_size=2), batches(0, 0, rank=1, world_size=2)
    assert identical([torch.cat(pair) for pair in zip(*halves)], first)
    for other in (batches(1, 0), batches(0, 1)):
        assert not set(torch.cat(first)[:, 0].tolist()) & set(torch.cat(other)[:, 0].tolist())  # different windows
    inputs, targets = next(iter(RandomWindows(stream, 16, 4, 10, 0)))
    assert torch.equal(targets, inputs + 1)


def test_tokenizer_is_the_datamodule_state(tmp_path):
    data = LanguageModelData(PydocTopics(), root=str(tmp_path))
    data.setup("fit")
    state = data.state_dict()
    assert set(state) == {"tokenizer"} and isinstance(state["tokenizer"], str)
    restored = LanguageModelData(PydocTopics(), root=str(tmp_path))
    restored.load_state_dict(state)  # without setup: what generation does
    assert restored.tokenizer == data.tokenizer
    other = train_tokenizer("char", ["a text with other characters: xyz!"], 128)
    with pytest.raises(DataError, match="differs from the checkpoint"):
        data.load_state_dict({"tokenizer": other.to_json()})


def test_pydoc_topics_classification_data_is_stratified_padded_and_fixed():
    data = TextClassificationData(PydocParagraphs(), batch_size=16)
    data.setup("fit")
    tokens, labels = data.splits["train"].tensors
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 448, "val": 49, "test": 122}
    assert torch.bincount(data.splits["test"].tensors[1]).tolist() == [17, 16, 10, 16, 19, 22, 11, 11]
    assert (tokens[:, 0] == Tokenizer.cls_id).all() and tokens.shape[1] == 128
    padding = tokens == Tokenizer.pad_id
    assert torch.equal(padding, padding.cummax(dim=1).values)  # pads only at the end
    first = data.tokenizer.decode(tokens[0])
    assert first and first in data.tokenizer.decode(data.tokenizer.encode(first))
    inputs, targets = next(iter(data.train_dataloader()))
    assert inputs.shape == (16, 128) and targets.shape == (16,) and len(PYDOC_TOPICS) == 8
    other = TextClassificationData(PydocParagraphs())
    other.setup("test")
    assert torch.equal(other.splits["test"].tensors[0], data.splits["test"].tensors[0])


def test_ag_news_loads_its_published_csv_format(tmp_path):
    directory = tmp_path / "ag_news_csv"
    directory.mkdir()
    rows = {
        "train": [(c, f"Title D{i}", "Line one\\line two, with a comma") for i, c in enumerate([1, 2, 3, 4] * 10)],
        "test": [(c, "T", "D, with a comma") for c in (4, 3, 2, 1)],
    }
    for split, split_rows in rows.items():
        with (directory / f"{split}.csv").open("w", newline="") as file:
            csv.writer(file, quoting=csv.QUOTE_ALL).writerows(split_rows)
    data = TextClassificationData(AGNews(), root=str(tmp_path), num_classes=4, val_fraction=0.2)
    data.setup("fit")
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 32, "val": 8, "test": 4}
    assert data.splits["test"].tensors[1].tolist() == [3, 2, 1, 0]
    assert data.tokenizer.decode(data.splits["test"].tensors[0][0]) == "T D, with a comma"
    assert "Line one line two" in data.tokenizer.decode(data.splits["train"].tensors[0][0])
    with pytest.raises(DataError, match="data.download=true"):
        TextClassificationData(AGNews(), root=str(tmp_path / "empty"), num_classes=4).setup("fit")

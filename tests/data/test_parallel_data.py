"""Sentence pairs: the number phrases (deterministic, disjoint splits, real reordering), the gettext catalogs (split
by catalog, cleaned, recorded), your files in every format with one-line errors, and the datamodule's encoding
and its corpus check on restore; length-grouped training batches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dlforge.data.parallel import ParallelData
from dlforge.data.sources.parallel import PLACEHOLDER, GettextCatalogs, NumberPhrases, ParallelFiles
from dlforge.data.tensors import TensorBatches, batch_loader
from dlforge.data.tokenizers import Tokenizer
from dlforge.errors import DataError


def test_number_phrases_are_deterministic_disjoint_and_reordered(tmp_path):
    source = NumberPhrases("de", train_size=300, val_size=50, test_size=100)
    splits = source.load(tmp_path, False)
    assert {split: len(sources) for split, (sources, _) in splits.items()} == {"train": 300, "val": 50, "test": 100}
    assert NumberPhrases("de", train_size=300, val_size=50, test_size=100).load(tmp_path / "again", False) == splits
    sets = [set(sources) for sources, _ in splits.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    pairs = dict(zip(*splits["train"]))
    # the units come before the tens in German: "... forty-three ..." -> "... dreiundvierzig ..."
    assert any(
        re.search(r"\bforty-three\b", english) and "dreiundvierzig" in german for english, german in pairs.items()
    )


def test_gettext_pairs_are_clean_split_by_catalog_and_recorded(tmp_path):
    source = GettextCatalogs("fr")
    splits = source.load(tmp_path, False)
    manifest = source.manifest(tmp_path)
    counts = {split: len(sources) for split, (sources, _) in splits.items()}
    assert manifest["pairs"] == counts and counts["train"] > 5 * counts["test"] > 0
    for english, french in zip(*splits["train"]):
        assert 3 <= len(english.split()) <= 25 and "\x04" not in english and english != french
        assert not PLACEHOLDER.search(english) and not PLACEHOLDER.search(french)
    catalogs = manifest["catalogs"]
    assert {entry["split"] for entry in catalogs.values()} == {"train", "val", "test"}
    assert all(entry["package"] and entry["version"] for entry in catalogs.values())  # dpkg owns every catalog
    train_sources = set(splits["train"][0])
    assert not train_sources & set(splits["test"][0]) and not train_sources & set(splits["val"][0])
    # the run's lineage gets the corpus' hash and the manifest with its catalogs counted (corpus.json lists them)
    data = ParallelData(source, root=str(tmp_path), vocab_size=300, max_pairs=32)
    data.setup()
    record = data.data_record()
    assert record["sha256"] == data.corpus_sha256 and record["pairs"] == {"train": 32, "val": 32, "test": 32}
    assert record["manifest"] == {**manifest, "catalogs": len(catalogs)}


def _pair_files(directory: Path) -> dict[str, Path]:
    directory.mkdir(exist_ok=True)
    files = {
        "train.en": "Open the file.\nSave it now.\nClose the window.\n",
        "train.fr": "Ouvrez le fichier.\nEnregistrez-le.\nFermez la fenêtre.\n",
        "pairs.tsv": "Open the file.\tOuvrez le fichier.\nSave it now.\tEnregistrez-le.\n",
        "pairs.jsonl": '{"translation": {"en": "Open the file.", "fr": "Ouvrez le fichier."}}\n'
        '{"en": "Save it now.", "fr": "Enregistrez-le."}\n',
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    return {name: directory / name for name in files}


def test_parallel_files_read_every_format(tmp_path):
    files = _pair_files(tmp_path)
    aligned = [str(files["train.en"]), str(files["train.fr"])]
    expected = (["Open the file.", "Save it now."], ["Ouvrez le fichier.", "Enregistrez-le."])
    for test in ("pairs.tsv", "pairs.jsonl"):
        splits = ParallelFiles(train=aligned, val=aligned, test=test).load(tmp_path, False)
        assert splits["test"] == expected
        assert splits["train"][1][2] == "Fermez la fenêtre."
    held_out = ParallelFiles(train=aligned, test="pairs.tsv", val_fraction=0.3).load(tmp_path, False)
    assert len(held_out["val"][0]) == 1 and len(held_out["train"][0]) == 2
    arrow = pytest.importorskip("pyarrow")  # parquet is read where pyarrow is installed
    parquet = pytest.importorskip("pyarrow.parquet")
    table = arrow.table({"translation": [{"en": e, "fr": f} for e, f in zip(*expected)]})
    parquet.write_table(table, tmp_path / "pairs.parquet")
    assert ParallelFiles(train=aligned, test="pairs.parquet").load(tmp_path, False)["test"] == expected


@pytest.mark.parametrize(
    "broken,content,message",
    [
        (
            "train.fr",
            "Ouvrez le fichier.\nEnregistrez-le.\n",
            r"train\.en has 3 lines but .*train\.fr has 2: line 3 of",
        ),
        ("train.fr", "Ouvrez le fichier.\n\nFermez la fenêtre.\n", r"train\.fr line 2 is empty"),
        ("pairs.tsv", "Open the file.\tOuvrez le fichier.\nSave it now.\n", r"pairs\.tsv line 2: 1 tab-separated"),
        ("pairs.jsonl", '{"en": "Open the file.", "fr": "Ouvrez"}\n{"en": "Save"\n', r"pairs\.jsonl line 2: not JSON"),
        ("pairs.jsonl", '{"en": "Open the file.", "de": "Öffnen"}\n', r"pairs\.jsonl line 1: no 'en' and 'fr' texts"),
    ],
)
def test_a_broken_pair_file_is_a_one_line_error_naming_file_and_line(broken, content, message, tmp_path):
    files = _pair_files(tmp_path)
    files[broken].write_text(content)
    test = "pairs.jsonl" if broken == "pairs.jsonl" else "pairs.tsv"
    with pytest.raises(DataError, match=message) as raised:
        ParallelFiles(train=["train.en", "train.fr"], test=test).load(tmp_path, False)
    assert "\n" not in str(raised.value)


def test_pairs_encode_with_a_shared_bpe_and_a_changed_corpus_is_named_on_restore(tmp_path):
    files = _pair_files(tmp_path)
    data = ParallelData(
        ParallelFiles(train=["train.en", "train.fr"], test="pairs.tsv"), root=str(tmp_path), vocab_size=300
    )
    data.setup()
    source, target = data.splits["test"].tensors
    assert [row[row != Tokenizer.pad_id][-1].item() for row in source] == [Tokenizer.eos_id] * 2
    assert target[:, 0].tolist() == [Tokenizer.cls_id] * 2
    assert data.tokenizer.decode(target[0].tolist()) == "Ouvrez le fichier."
    state = data.state_dict()
    files["pairs.tsv"].write_text("Open the file.\tOuvre le fichier.\nSave it now.\tEnregistrez-le.\n")
    restored = ParallelData(
        ParallelFiles(train=["train.en", "train.fr"], test="pairs.tsv"), root=str(tmp_path), vocab_size=300
    )
    restored.load_state_dict(state)
    with pytest.raises(
        DataError, match=r"parallel_text: this machine makes other pairs \(corpus sha256 \w+\) than the run"
    ):
        restored.setup()
    assert json.loads(json.dumps(state))["corpus_sha256"] == data.corpus_sha256
    # max_pairs: the first pair of each split (of pairs.tsv as rewritten above)
    first = ParallelData(ParallelFiles(train=["train.en", "train.fr"], test="pairs.tsv"), str(tmp_path), max_pairs=1)
    first.setup()
    assert {split: len(batches) for split, batches in first.splits.items()} == {"train": 1, "val": 1, "test": 1}
    assert first.tokenizer.decode(first.splits["test"].tensors[1][0].tolist()) == "Ouvre le fichier."


def test_length_grouped_batches_cut_padding_split_over_ranks_and_resume_mid_epoch():
    lengths = torch.randint(3, 40, (1000,), generator=torch.Generator().manual_seed(0))
    dataset = TensorBatches(lengths, torch.arange(1000))

    def epoch(rank=0, world_size=1, group=True, state=None):
        loader = batch_loader(dataset, 64 // world_size, True, rank, world_size, lengths if group else None)
        if state is not None:
            loader.load_state_dict(state)
        loader.sampler.set_epoch(2)
        return loader

    torch.manual_seed(0)
    grouped = [indices for _, indices in epoch()]
    assert sorted(torch.cat(grouped).tolist()) == list(range(1000))  # every pair once an epoch
    assert [len(batch) for batch in grouped] == [64] * 15 + [40]  # the partial batch last
    shuffled = [indices for _, indices in epoch(group=False)]
    padded = sum(len(batch) * int(lengths[batch].max()) for batch in grouped)
    assert padded < 0.6 * sum(len(batch) * int(lengths[batch].max()) for batch in shuffled)
    ranks = [[indices for _, indices in epoch(rank, 2)] for rank in (0, 1)]
    for whole, *halves in zip(grouped, *ranks):  # the ranks' k-th batches make the one-process k-th batch
        assert all(torch.equal(half, whole[rank::2]) for rank, half in enumerate(halves))
    interrupted = epoch()
    batches = iter(interrupted)
    seen = [next(batches)[1] for _ in range(5)]
    seen += [indices for _, indices in epoch(state=interrupted.state_dict())]
    assert len(seen) == 16 and all(torch.equal(a, b) for a, b in zip(seen, grouped))
    other_epoch = epoch()
    other_epoch.sampler.set_epoch(3)
    assert not torch.equal(next(iter(other_epoch))[1], grouped[0])

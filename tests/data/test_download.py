"""Downloads of every source that has them (tiny shakespeare, AG News, torchvision's MNIST family and
CIFAR-10), against local servers: a silent or stalling server fails the download within its timeout
with one line naming the URL and the timeout, and leaves no file; a real download shows its progress
and keeps the whole, checked file."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR10, MNIST

from conftest import run_script
from dlforge.data.sources import corpora, texts
from dlforge.data.sources.corpora import TinyShakespeare
from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.sources.texts import AGNews
from dlforge.errors import DataError
from servers import file_server, refusing_url, stalling_server

TIMEOUT = 1.0
# The head of an answer whose body stops after 1000 of 100000 bytes.
PARTIAL_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000


def _point_at(source: str, base_url: str, monkeypatch) -> tuple[object, str]:
    """The source, with its published URL (or mirror) replaced by one under `base_url`; and that URL."""
    if source == "tiny_shakespeare":
        url = f"{base_url}/input.txt"
        monkeypatch.setattr(corpora, "TINY_SHAKESPEARE_URL", url)
        return TinyShakespeare(download_timeout=TIMEOUT), url
    if source == "ag_news":
        monkeypatch.setattr(texts, "AG_NEWS_URL", f"{base_url}/{{split}}.csv")
        return AGNews(download_timeout=TIMEOUT), f"{base_url}/train.csv"
    if source == "mnist":
        monkeypatch.setattr(MNIST, "mirrors", [f"{base_url}/"])
        return TorchvisionImages("mnist", download_timeout=TIMEOUT), f"{base_url}/{MNIST.resources[0][0]}"
    monkeypatch.setattr(CIFAR10, "url", f"{base_url}/{CIFAR10.filename}")
    return TorchvisionImages("cifar10", download_timeout=TIMEOUT), CIFAR10.url


def _load(source, root: Path):
    return source.text(root, download=True) if isinstance(source, TinyShakespeare) else source.load(root, True)


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.mark.parametrize("sent", [b"", PARTIAL_ANSWER], ids=["silent", "stalls_halfway"])
@pytest.mark.parametrize("source", ["tiny_shakespeare", "ag_news", "mnist", "cifar10"])
def test_a_stalled_download_fails_within_its_timeout_naming_url_and_timeout_and_leaves_no_file(
    source, sent, tmp_path, monkeypatch
):
    with stalling_server(sent) as base_url:
        source, url = _point_at(source, base_url, monkeypatch)
        started = time.monotonic()
        with pytest.raises(DataError) as raised:
            _load(source, tmp_path)
        seconds = time.monotonic() - started
    message = str(raised.value)
    assert "\n" not in message and f"could not download {url} (no data for 1 s" in message
    assert "data.source.download_timeout=1" in message
    assert ("after 1000 bytes" in message) == bool(sent)
    assert seconds < TIMEOUT + 3
    assert _files(tmp_path) == []  # no partial or temporary file


def test_each_mirror_is_tried_and_named(tmp_path, monkeypatch):
    with stalling_server() as silent:
        monkeypatch.setattr(MNIST, "mirrors", [f"{silent}/", f"{refusing_url()}/"])
        mirrors = r"\(no data for 1 s; .*\) or http://127\.0\.0\.1:\d+/train-images.* refused"
        with pytest.raises(DataError, match=mirrors):
            TorchvisionImages("mnist", download_timeout=TIMEOUT).load(tmp_path, download=True)
    assert _files(tmp_path) == []


def test_a_download_shows_its_progress_and_keeps_the_whole_file(tmp_path, monkeypatch, capsys):
    play = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 4000  # ~250 KB
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "input.txt").write_text(play)
    with file_server(tmp_path / "published") as base_url:
        source, _ = _point_at("tiny_shakespeare", base_url, monkeypatch)
        assert source.text(tmp_path / "data", download=True) == play
    assert "input.txt: 100%" in capsys.readouterr().err  # tqdm's line: name, share, bytes, rate
    assert _files(tmp_path / "data") == [tmp_path / "data" / "tiny_shakespeare" / "input.txt"]


def test_a_corrupted_download_is_refused_and_not_kept(tmp_path, monkeypatch):
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "train.csv").write_text('"1","Title","Not the published file"\n')
    with file_server(tmp_path / "published") as base_url:
        source, url = _point_at("ag_news", base_url, monkeypatch)
        with pytest.raises(DataError, match=f"could not download {url} \\(MD5 [0-9a-f]{{32}} is not the published"):
            source.load(tmp_path / "data", download=True)
    assert _files(tmp_path / "data") == []


def _gzipped_idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_mnist_archives_are_fetched_from_the_next_mirror_and_extracted_by_torchvision(tmp_path, monkeypatch):
    published = tmp_path / "published"
    published.mkdir()
    resources = []
    for prefix, count in (("train", 30), ("t10k", 10)):
        for kind, array in (("images-idx3", np.full((count, 28, 28), 7)), ("labels-idx1", np.arange(count) % 10)):
            name = f"{prefix}-{kind}-ubyte.gz"
            (published / name).write_bytes(_gzipped_idx(array))
            resources.append((name, hashlib.md5((published / name).read_bytes()).hexdigest()))
    monkeypatch.setattr(MNIST, "resources", resources)
    with file_server(published) as base_url:
        monkeypatch.setattr(MNIST, "mirrors", [f"{refusing_url()}/", f"{base_url}/"])
        train, test = TorchvisionImages("mnist").load(tmp_path / "data", download=True)
    assert train.images.shape == (30, 1, 28, 28) and (train.images == 7).all()
    assert test.labels.tolist() == list(range(10))


def test_cifar10_archive_is_fetched_checked_and_extracted_by_torchvision(tmp_path, monkeypatch):
    batches, archive = {}, io.BytesIO()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = pickle.dumps({"data": np.zeros((4, 3 * 32 * 32), np.uint8), "labels": [0, 1, 2, 3]})
    batches["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, content in batches.items():
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / CIFAR10.filename).write_bytes(archive.getvalue())
    md5 = {name: hashlib.md5(content).hexdigest() for name, content in batches.items()}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.getvalue()).hexdigest())
    with file_server(tmp_path / "published") as base_url:
        _point_at("cifar10", base_url, monkeypatch)
        train, test = TorchvisionImages("cifar10").load(tmp_path / "data", download=True)
    assert train.images.shape == (20, 3, 32, 32) and test.labels.tolist() == [0, 1, 2, 3]


def test_prepare_stops_a_stalled_download_with_one_line_and_exit_2(tmp_path):
    """The published URL, reached through a proxy that accepts and never answers (the issue's hang)."""
    with stalling_server() as proxy:
        started = time.monotonic()
        result = run_script(
            "prepare",
            "data=shakespeare_lm",
            "data.download=true",
            "data.source.download_timeout=2",
            f"paths.data_dir={tmp_path / 'data'}",
            log_dir=tmp_path / "outputs",
            env={"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""},
            timeout=120,
        )
        seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: could not download {corpora.TINY_SHAKESPEARE_URL} (no data for 2 s")
    assert "data.source.download_timeout=2" in last_line
    assert not (tmp_path / "data").exists() or _files(tmp_path / "data") == []
    assert seconds < 60  # imports and the 2 s timeout; it hung for good before

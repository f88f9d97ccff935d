"""The user's data is never rewritten before it is verified: prepared dirs are made in a temporary dir
and swapped in whole, the verification never prepares into the data dir, and bad data (an empty or
undecodable corpus, a corrupt file, a broken data.dvc, a data dir that cannot be written) is one line
naming the file. A dataset the user fetched that data.dvc does not list is trained on and recorded."""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, assert_ok, run_dirs, run_script, script_env
from dlforge.data.image import ImageClassificationData
from dlforge.data.sources.corpora import PydocTopics, TinyShakespeare
from dlforge.data.sources.images import Digits
from dlforge.data.text import LanguageModelData
from dlforge.data.verify import verified_data
from dlforge.errors import DataError

# ~44k characters: enough for every split of the GPT defaults (block_size 64, 16 evaluation rows)
PLAY = "".join(
    f"CITIZEN {i}:\nBefore we proceed any further, hear me speak of {i * 7 % 13} matters.\n\n" for i in range(600)
)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory` (hidden ones too): its bytes and modification time."""
    return {
        path.relative_to(directory).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A project root whose data/ is the version the repository's data.dvc records, with that version's
    file list kept (as after a first verified run), so that tests need not rebuild it."""
    from hydra import initialize_config_dir

    from dlforge.data.verify import prepare_offline
    from dlforge.data.versioning import dir_md5, hash_files, keep_recorded_files, recorded_md5

    root = tmp_path_factory.mktemp("recorded")
    shutil.copy(ROOT / "data.dvc", root / "data.dvc")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        files = hash_files(root / "data", sorted(prepare_offline(root / "data")))
    assert dir_md5(files) == recorded_md5(root)
    keep_recorded_files(root, recorded_md5(root), files)
    return root


@pytest.fixture
def project(recorded, tmp_path) -> Path:
    """A copy of `recorded` to change."""
    shutil.copytree(recorded, tmp_path / "project")
    return tmp_path / "project"


def shakespeare(root: Path, **options) -> LanguageModelData:
    return LanguageModelData(TinyShakespeare(), root=str(root), val_fraction=0.1, test_fraction=0.05, **options)


def test_default_prepared_dir_keeps_its_name_and_other_splits_go_beside_it(tmp_path):
    default = LanguageModelData(PydocTopics(), root=str(tmp_path))
    default.prepare_data()
    assert default.prepared_dir == tmp_path / "pydoc_topics" / "char-128"  # the name data.dvc records
    before = snapshot(default.prepared_dir)
    other = LanguageModelData(PydocTopics(), root=str(tmp_path), test_fraction=0.1)
    other.setup("fit")
    assert other.prepared_dir == tmp_path / "pydoc_topics" / "char-128-val0.05-test0.1"
    assert snapshot(default.prepared_dir) == before  # not rewritten in place
    assert other._read_meta()["settings"]["test_fraction"] == 0.1
    assert len(other.streams["test"]) == pytest.approx(2 * len(default._stream("test", default._read_meta())), abs=2)
    assert sorted(path.name for path in (tmp_path / "pydoc_topics").iterdir()) == [
        "char-128",
        "char-128-val0.05-test0.1",
    ]  # no temporary dirs left


@pytest.mark.parametrize(
    "content,message",
    [(b"", "is empty"), (b"  \n\n", "is empty"), (b"\xff\xfe\xfa not utf-8", "is unreadable or corrupt (")],
)
def test_empty_or_undecodable_corpus_is_one_line_and_leaves_the_prepared_files(content, message, tmp_path):
    corpus = tmp_path / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(PLAY)
    prepared = shakespeare(tmp_path)
    prepared.prepare_data()
    before = snapshot(tmp_path)
    corpus.write_bytes(content)
    with pytest.raises(DataError) as raised:
        verified_data(shakespeare(tmp_path), tmp_path, tmp_path, verify=False)
    assert str(raised.value).startswith(f"{corpus} {message}") and "\n" not in str(raised.value)
    after = snapshot(tmp_path)
    assert after.pop("tiny_shakespeare/input.txt")[0] == content
    assert after == {path: state for path, state in before.items() if path != "tiny_shakespeare/input.txt"}


def test_too_short_corpus_prepares_nothing(tmp_path):
    corpus = tmp_path / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text("To be.")
    with pytest.raises(DataError, match=r"^the val part of tiny_shakespeare has no text: 6 characters are too few"):
        shakespeare(tmp_path).prepare_data()
    assert snapshot(tmp_path) == {"tiny_shakespeare/input.txt": (b"To be.", corpus.stat().st_mtime_ns)}


def test_a_failed_preparation_leaves_the_previous_prepared_dir_whole(tmp_path, monkeypatch):
    from dlforge.data import text

    corpus = tmp_path / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(PLAY)
    shakespeare(tmp_path).prepare_data()
    before = snapshot(tmp_path / "tiny_shakespeare")
    corpus.write_text(PLAY.upper())  # another text: the streams are made anew
    written = []

    def fail_after_one(path, *args):
        if written:
            raise OSError(errno.EIO, "Input/output error", str(path))
        written.append(path)
        return write_tokens(path, *args)

    write_tokens = text._write_tokens
    monkeypatch.setattr(text, "_write_tokens", fail_after_one)
    with pytest.raises(OSError, match="Input/output error"):
        shakespeare(tmp_path).prepare_data()
    after = snapshot(tmp_path / "tiny_shakespeare")
    assert after.pop("input.txt")[0] == PLAY.upper().encode()
    assert after == {path: state for path, state in before.items() if path != "input.txt"}  # no temporary dir left


# A process preparing `root`'s Shakespeare streams once `go` exists; each swap of a staged dir into place
# waits 2 s first, so that both processes find the prepared dir missing before either swaps its own in.
PREPARING = """
import os, sys, time
from pathlib import Path

rename = os.rename

def slow_rename(source, destination):
    if Path(source).name.endswith(".tmp"):
        time.sleep(2)
    rename(source, destination)

os.rename = slow_rename
from dlforge.data.sources.corpora import TinyShakespeare
from dlforge.data.text import LanguageModelData

root, ready, go = map(Path, sys.argv[1:])
ready.touch()
while not go.exists():
    time.sleep(0.01)
data = LanguageModelData(TinyShakespeare(), root=str(root), val_fraction=0.1, test_fraction=0.05)
data.prepare_data()
data.setup("fit")
print(sum(len(stream) for stream in data.streams.values()))
"""


def test_two_processes_preparing_the_same_dir_at_once_both_succeed(tmp_path):
    """Sweep jobs (and parallel test workers) prepare the same data dir at once: one makes it, the
    other waits for it and reads it, and one whole prepared dir is left with no temporary dir."""
    corpus = tmp_path / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(PLAY)
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARING, str(tmp_path), str(ready), str(go)],
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(ready.exists() for ready in readies) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        outcomes = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outcomes):
        assert process.returncode == 0, stderr[-3000:]
    assert outcomes[0][0] == outcomes[1][0]  # both read the same streams
    assert sorted(path.name for path in corpus.parent.iterdir()) == ["char-128-val0.1-test0.05", "input.txt"]
    made = shakespeare(tmp_path)
    made.setup("fit")  # the dir left is whole: its meta.json matches its streams
    assert sum(len(stream) for stream in made.streams.values()) == int(outcomes[0][0])


def test_verification_prepares_nothing_into_the_data_dir(project):
    """data.dvc names a version whose file list is unknown: the datasets made offline are rebuilt in a
    temporary dir to compare, and the run stops with the data dir as it was."""
    (project / "data.dvc").write_text((project / "data.dvc").read_text().replace("f14f5b7e", "00000000"))
    shutil.rmtree(project / "data" / "pydoc_topics")
    before = snapshot(project / "data")
    with pytest.raises(DataError, match=r"^data/ is not the version data.dvc records \(00000000"):
        verified_data(ImageClassificationData(Digits(), root=str(project / "data")), project / "data", project, True)
    assert snapshot(project / "data") == before


def test_data_that_fails_verification_leaves_the_recorded_files(project, monkeypatch):
    """The corpus text changed (another Python's help topics): the streams made from it replace the
    recorded ones only for as long as it takes to see that they differ from what data.dvc records."""
    before = snapshot(project / "data")
    monkeypatch.setattr(PydocTopics, "text", lambda self, root, download: PLAY)
    data = LanguageModelData(PydocTopics(), root=str(project / "data"))
    with pytest.raises(DataError) as raised:
        verified_data(data, project / "data", project, verify=True)
    assert str(raised.value).startswith(
        "the data this run reads is not the version in data.dvc: changed: data/pydoc_topics/char-128/meta.json, "
    )
    assert snapshot(project / "data") == before


@pytest.mark.parametrize(
    "content", ["", "not: [yaml", "outs: 3", "outs:\n- md5: 12345\n  path: data\n", "just a line of text\n"]
)
def test_a_broken_data_dvc_is_one_line_before_anything_is_written(content, tmp_path):
    (tmp_path / "data.dvc").write_text(content)
    with pytest.raises(DataError) as raised:
        verified_data(ImageClassificationData(Digits(), root=str(tmp_path / "data")), tmp_path / "data", tmp_path, True)
    assert str(raised.value) == (
        f"{tmp_path / 'data.dvc'} does not record a version of the data dir "
        "(no `outs: [{md5: <32 hex digits>.dir}]`): "
        "`git checkout data.dvc` restores the committed one, `dvc add data` records the data dir anew"
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("verify", [True, False])
def test_a_data_dir_that_cannot_be_written_is_one_line(verify, project, monkeypatch):
    """As a read-only dir or file system refuses (a test running as root may write anywhere)."""
    shutil.rmtree(project / "data" / "digits")
    before = snapshot(project / "data")
    make_dir = Path.mkdir

    def refused(self, *args, **kwargs):
        if self.is_relative_to(project / "data"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return make_dir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(DataError) as raised:
        verified_data(ImageClassificationData(Digits(), root=str(project / "data")), project / "data", project, verify)
    assert str(raised.value) == (
        f"cannot write {project / 'data' / 'digits'} (Permission denied), where the data must be prepared: "
        "make the data dir writable, or set paths.data_dir to a writable dir"
    )  # and no more: `dvc pull` would not help
    assert snapshot(project / "data") == before


@pytest.mark.parametrize(
    "dataset,path,corrupt",
    [
        ("digits", "digits/images.npy", lambda path: path.write_bytes(b"not an array")),
        ("digits", "digits/labels.npy", lambda path: path.write_bytes(path.read_bytes()[:100])),
        ("pydoc_lm", "pydoc_topics/char-128/val.bin", lambda path: path.write_bytes(path.read_bytes()[:-1])),
        ("pydoc_lm", "pydoc_topics/char-128/test.bin", lambda path: path.write_bytes(path.read_bytes()[:-2])),
        ("pydoc_lm", "pydoc_topics/char-128/tokenizer.json", lambda path: path.write_text("{")),
        ("pydoc_lm", "pydoc_topics/char-128/meta.json", lambda path: path.write_text("[]")),
    ],
)
def test_a_corrupt_data_file_unverified_is_one_line_naming_it(dataset, path, corrupt, project):
    corrupt(project / "data" / path)
    before = snapshot(project / "data")
    data = (
        ImageClassificationData(Digits(), root=str(project / "data"))
        if dataset == "digits"
        else LanguageModelData(PydocTopics(), root=str(project / "data"))
    )
    with pytest.raises(DataError) as raised:
        verified_data(data, project / "data", project, verify=False)
    assert str(raised.value).startswith(f"{project / 'data' / path} ") and "\n" not in str(raised.value)
    assert "`dvc checkout data` restores the version data.dvc records" in str(raised.value)
    assert snapshot(project / "data") == before


def test_corrupt_data_unverified_ends_the_script_with_one_line(project, log_dir):
    images = project / "data" / "digits" / "images.npy"
    images.write_bytes(b"\x93NUMPY garbage")
    result = run_script("train", f"paths.root_dir={project}", "verify_data=false", "logger=none", log_dir=log_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {images} is unreadable or corrupt (")
    assert "Traceback" not in result.stderr


def test_a_fetched_dataset_data_dvc_does_not_list_is_trained_on_and_recorded(project, log_dir):
    """The README's `data=shakespeare_lm data.download=true`, with the corpus already in place (no network)."""
    corpus = project / "data" / "tiny_shakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(PLAY)
    recorded_before = snapshot(project / "data" / "pydoc_topics")
    overrides = ("model=gpt", "data=shakespeare_lm", "data.download=true", "debug=limit_batches", "logger=none")
    result = run_script("train", f"paths.root_dir={project}", *overrides, log_dir=log_dir)
    assert_ok(result)
    assert "not in data.dvc" in result.stdout and "`dvc add data` records them" in result.stdout
    (run_dir,) = run_dirs(log_dir)
    data = yaml.safe_load((run_dir / "lineage.yaml").read_text())["data"]
    prepared = "tiny_shakespeare/char-128-val0.1-test0.05"
    assert sorted(data["unrecorded"]) == sorted(
        ["tiny_shakespeare/input.txt"]
        + [f"{prepared}/{name}" for name in ("meta.json", "tokenizer.json")]
        + [f"{prepared}/{split}.bin" for split in ("train", "val", "test")]
    )
    assert data["unrecorded"]["tiny_shakespeare/input.txt"] == hashlib.md5(PLAY.encode()).hexdigest()
    assert (
        data["verified"] is False
        and data["recorded"] == yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    )
    assert snapshot(project / "data" / "pydoc_topics") == recorded_before
    assert np.isfinite(yaml.safe_load((run_dir / "lineage.yaml").read_text())["metrics"]["test/loss"])

"""Translation end to end: a short run on number phrases (trained in this process, as train.py would: the
train script itself is run by many other tests), `eval.py` reproducing its test metrics exactly,
`translate.py` giving what the model's beam search gives, the attention maps of beam translations drawn, the
corpus' hash in the run's lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from conftest import assert_ok, compose, job_config, read_metrics, run_dirs, run_script
from dlforge.objectives.media import Heatmap
from dlforge.objectives.seq2seq import ATTENTION_MAPS, pieces
from dlforge.objectives.translating import beam_search
from dlforge.run.lineage import read
from dlforge.run.load import load_run

SMALL = ["data.source.train_size=640", "data.source.val_size=16", "data.source.test_size=16", "data.eval_batch_size=8"]
SMALL += ["model.net.dim=64", "model.net.encoder_depth=1", "model.net.decoder_depth=1", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def trained_numbers(tmp_path_factory) -> Path:
    """20 optimizer steps of the number-phrase Transformer on 640 pairs: too few to translate well, enough to
    write phrases that end."""
    from dlforge.tasks.train import train

    log_dir = tmp_path_factory.mktemp("numbers")
    run_dir = log_dir / "run"
    train(
        job_config(
            compose("train", ["experiment=numbers_en_de", *SMALL, "logger=none", f"paths.log_dir={log_dir}"], run_dir)
        )
    )
    return run_dir


def test_eval_reproduces_train_time_translation_metrics(trained_numbers, tmp_path):
    result = run_script("eval", f"ckpt_path={trained_numbers / 'checkpoints' / 'best.ckpt'}", log_dir=tmp_path)
    assert_ok(result)
    (eval_dir,) = run_dirs(tmp_path, "eval")
    trained, evaluated = read_metrics(trained_numbers), read_metrics(eval_dir)
    names = [f"test/{name}{kind}" for name in ("bleu", "chrf", "exact") for kind in ("", "_beam")] + ["test/loss"]
    assert {name: evaluated[name] for name in names} == {name: trained[name] for name in names}
    assert (trained_numbers / "corpus.json").is_file() and (
        trained_numbers / "media" / "test" / "translations.json"
    ).is_file()


def test_translate_script_gives_the_models_beam_search_and_its_attention_map(trained_numbers, tmp_path):
    checkpoint = trained_numbers / "checkpoints" / "best.ckpt"
    text = "three hundred and forty-two"
    result = run_script("translate", f"ckpt_path={checkpoint}", f"text={text}", "beam_size=3", log_dir=tmp_path)
    assert_ok(result)
    (run_dir,) = run_dirs(tmp_path, "translate")
    run = load_run(checkpoint)
    tokenizer = run.datamodule.tokenizer
    source = torch.tensor([[*tokenizer.encode(text), tokenizer.eos_id]])
    expected = beam_search(run.model.net, source, tokenizer.cls_id, tokenizer.eos_id, beam_size=3, alpha=0.6)[0]
    assert (run_dir / "translation.txt").read_text() == tokenizer.decode(expected) + "\n"
    picture = imread(run_dir / "attention.png")  # what the decoder read while writing it
    assert picture.ndim == 3 and picture.std() > 0


def test_attention_maps_label_the_beam_translation_down_and_its_source_across(trained_numbers):
    run = load_run(trained_numbers / "checkpoints" / "best.ckpt")
    run.datamodule.setup("test")
    tokenizer = run.model.tokenizer = run.datamodule.tokenizer
    source, target = run.datamodule.splits["test"].__getitems__(list(range(8)))
    with torch.no_grad():
        table, *maps = run.model.sample_media((source, target), tokenizer)
    assert [item.key for item in maps] == [f"test/attention/{number}" for number in range(ATTENTION_MAPS)]
    for item, row, (source_text, _, _, beam_text) in zip(maps, source, table.rows):
        assert isinstance(item, Heatmap) and item.matrix.shape == (len(item.rows), len(item.columns))
        assert item.columns == pieces(tokenizer, row[row != tokenizer.pad_id].tolist())
        assert "".join(item.columns).replace("▁", " ") == source_text + "<eos>"
        ended = item.rows[-1] == "<eos>"  # the translation ended there, not at the length limit
        assert "".join(item.rows[: len(item.rows) - ended]).replace("▁", " ") == beam_text
        torch.testing.assert_close(item.matrix.sum(1), torch.ones(len(item.rows)))


def test_run_dir_holds_the_attention_maps_and_lineage_the_corpus_hash(trained_numbers):
    """One PNG per attention map; lineage.yaml records the corpus' sha256 that corpus.json and the checkpoint
    hold, with its pair counts."""
    files = sorted((trained_numbers / "media" / "test" / "attention").iterdir())
    assert [path.name for path in files] == [f"{number}.png" for number in range(ATTENTION_MAPS)]
    for path in files:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(path).shape[2] == 4
    corpus = json.loads((trained_numbers / "corpus.json").read_text())
    recorded = read(trained_numbers / "lineage.yaml")["data"]["read"]
    checkpoint = torch.load(trained_numbers / "checkpoints" / "best.ckpt", weights_only=True)
    assert recorded["sha256"] == corpus["sha256"] == checkpoint["ParallelData"]["corpus_sha256"]
    assert recorded["pairs"] == corpus["pairs"] == {"train": 640, "val": 16, "test": 16}
    assert recorded["manifest"] == corpus["manifest"] == {"num2words": corpus["manifest"]["num2words"]}

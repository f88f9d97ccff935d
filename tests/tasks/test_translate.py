"""Translation end to end: a short run on number phrases (trained in this process, as train.py would: the
train script itself is run by many other tests), `eval.py` reproducing its test metrics exactly,
`translate.py` giving what the model's beam search gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_ok, compose, job_config, read_metrics, run_dirs, run_script
from dlforge.objectives.translating import beam_search
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


def test_translate_script_gives_the_models_beam_search(trained_numbers, tmp_path):
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

"""Masked-LM masking (the 80/10/10 rule, static and dynamic masks) and fine-tuning from a pretrained
checkpoint (strict weights, the same tokenizer, a mismatch in one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_ok, run_dirs, run_script
from dlforge.data.sources.corpora import PydocTopics
from dlforge.data.text import LanguageModelData
from dlforge.data.tokenizers import (
    Tokenizer,
    pretrained_tokenizer,
    train_tokenizer,
)
from dlforge.errors import CheckpointError
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.objectives.masked_lm import FIRST_TEXT_ID, MaskedLM
from dlforge.objectives.pretrained import load_pretrained_net


def encoder(**sizes) -> TransformerEncoder:
    return TransformerEncoder(**{"vocab_size": 40, "max_length": 32, "dim": 32, "depth": 2, "heads": 4, **sizes})


def test_masking_follows_the_80_10_10_rule_on_text_tokens_only():
    torch.manual_seed(0)
    model = MaskedLM(encoder(vocab_size=100))
    tokens = torch.randint(FIRST_TEXT_ID, 100, (200, 1000))
    tokens[:, -100:] = Tokenizer.pad_id
    for static in (False, True):
        inputs, selected = model.mask(tokens, static=static)
        text = tokens >= FIRST_TEXT_ID
        assert not selected[~text].any() and torch.equal(inputs[~text], tokens[~text])
        assert abs(selected[text].float().mean().item() - 0.15) < 0.005
        chosen, original = inputs[selected], tokens[selected]
        masked = (chosen == Tokenizer.mask_id).float().mean().item()
        unchanged = (chosen == original).float().mean().item()  # includes random draws of the same token
        assert abs(masked - 0.8) < 0.01 and abs(unchanged - 0.1 - 0.1 / 95) < 0.01
        assert chosen[chosen != Tokenizer.mask_id].min() >= FIRST_TEXT_ID  # random tokens are text tokens
        assert torch.equal(inputs[~selected], tokens[~selected])


def test_static_masks_repeat_every_epoch_and_dynamic_ones_do_not(tmp_path):
    data = LanguageModelData(PydocTopics(), root=str(tmp_path), block_size=64, batch_size=8, ordering="contiguous")
    data.setup("fit")
    model = MaskedLM(encoder(vocab_size=128, max_length=64))
    epochs = [[batch[0] for _, batch in zip(range(3), data.train_dataloader())] for _ in range(2)]
    for first, second in zip(*epochs):
        assert torch.equal(first, second)  # the same windows every epoch
        assert torch.equal(model.mask(first, static=True)[0], model.mask(second, static=True)[0])
        assert not torch.equal(model.mask(first, static=False)[0], model.mask(second, static=False)[0])
    assert not torch.equal(model.mask(epochs[0][0], static=True)[1], model.mask(epochs[0][1], static=True)[1])


def _checkpoint(path: Path, net: torch.nn.Module, tokenizer: Tokenizer) -> Path:
    """A checkpoint as a `model=bert_mlm` run writes it, holding `net`'s weights and its data's tokenizer."""
    torch.save(
        {
            "state_dict": {f"net.{key}": value for key, value in net.state_dict().items()}
            | {"head.decoder.bias": torch.zeros(1)},
            "run_config": {
                "data": {"_target_": "dlforge.data.text.LanguageModelData"},
                "model": {"net": {"_target_": "dlforge.nets.text.encoder.TransformerEncoder"}},
            },
            "LanguageModelData": {"tokenizer": tokenizer.to_json()},
        },
        path,
    )
    return path


def test_pretrained_weights_load_strictly_with_their_tokenizer(tmp_path):
    tokenizer = train_tokenizer("char", ["some pretraining text"], 40)
    pretrained = encoder()
    path = _checkpoint(tmp_path / "best.ckpt", pretrained, tokenizer)
    assert pretrained_tokenizer(path) == tokenizer
    net = encoder()
    load_pretrained_net(net, path, tokenizer)
    assert all(torch.equal(value, pretrained.state_dict()[key]) for key, value in net.state_dict().items())

    with pytest.raises(CheckpointError, match=r"missing blocks\.2\..*; configure model.net"):
        load_pretrained_net(encoder(depth=3), path)
    with pytest.raises(CheckpointError, match=r"unexpected blocks\.1\."):
        load_pretrained_net(encoder(depth=1), path)
    with pytest.raises(CheckpointError, match=r"token_embedding.weight is \(40, 32\) in the checkpoint but \(50, 32\)"):
        load_pretrained_net(encoder(vocab_size=50), path)
    with pytest.raises(CheckpointError, match="another tokenizer than the pretraining run's"):
        load_pretrained_net(net, path, train_tokenizer("char", ["other text"], 40))


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    """A few steps of `model=bert_mlm` with a small encoder: a checkpoint to fine-tune from."""
    log_dir = tmp_path_factory.mktemp("bert_mlm") / "outputs"
    result = run_script(
        "train",
        "model=bert_mlm",
        "model.net.depth=2",
        "debug=limit_batches",
        "trainer.max_epochs=1",
        "test=false",
        "logger=none",
        log_dir=log_dir,
    )
    assert_ok(result)
    return run_dirs(log_dir)[0] / "checkpoints" / "best.ckpt"


def test_fine_tuning_a_mismatched_encoder_fails_in_one_line(pretrained_run, log_dir):
    result = run_script(
        "train", "model=bert_cls", f"model.pretrained={pretrained_run}", "debug=fast_dev_run", log_dir=log_dir
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: model.pretrained={pretrained_run}: ") and "Traceback" not in result.stderr
    assert "missing blocks.2." in lines[-1]  # bert_cls builds 4 blocks, the checkpoint has 2

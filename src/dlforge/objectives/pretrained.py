"""Fine-tuning: a network starts from the network weights of another run's checkpoint (e.g. an encoder
pretrained by `model=bert_mlm`), and text data from the tokenizer that run trained with."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dlforge.checkpoint_file import load_checkpoint
from dlforge.data.tokenizers import Tokenizer, saved_tokenizer
from dlforge.errors import CheckpointError, some


def load_pretrained_net(
    net: nn.Module, path: str | Path, tokenizer: Tokenizer | None = None, part: str | None = None
) -> None:
    """Copy the checkpoint's `net.*` weights into `net`, or into its submodule `part` (a dotted name: a
    detector's `features` pretrained as a classifier), every key and shape matching. If the checkpoint's run
    tokenized its data, `tokenizer` (the one the data is now encoded with) must be that tokenizer."""
    checkpoint = load_checkpoint(path)
    receiver = f"model.net.{part}" if part else "model.net"
    if part:
        net = net.get_submodule(part)
    weights = {
        key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")
    }
    expected = net.state_dict()
    problems = []
    if missing := sorted(expected.keys() - weights.keys()):
        problems.append(f"missing {some(missing)}")
    if unexpected := sorted(weights.keys() - expected.keys()):
        problems.append(f"unexpected {some(unexpected)}")
    problems += [
        f"{key} is {tuple(weights[key].shape)} in the checkpoint but {tuple(expected[key].shape)} in {receiver}"
        for key in sorted(expected.keys() & weights.keys())
        if weights[key].shape != expected[key].shape
    ]
    if problems:
        pretrained_net = checkpoint["run_config"]["model"]["net"]["_target_"]
        raise CheckpointError(
            f"model.pretrained={path}: its network ({pretrained_net}) does not fit {receiver}: {'; '.join(problems)}; "
            "configure model.net (and data.vocab_size) as in the pretraining run"
        )
    pretraining_tokenizer = saved_tokenizer(checkpoint)
    if tokenizer is not None and pretraining_tokenizer is not None and tokenizer != pretraining_tokenizer:
        raise CheckpointError(
            f"model.pretrained={path}: the data is encoded with another tokenizer than the pretraining run's; "
            f"set data.tokenizer_from={path}"
        )
    net.load_state_dict(weights)

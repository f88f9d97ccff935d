"""Tokenizers: character level and byte-level BPE, both Hugging Face `tokenizers` models behind one
small interface. A tokenizer serialises to JSON, so a run's tokenizer travels with its checkpoints.

Every vocabulary starts with the same special tokens, so code can use their ids without asking:
pad 0, unk 1, mask 2, cls 3, eos 4. Text never encodes to them (a literal "<eos>" in the text is
spelt out): they are placed by code only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from dlforge.checkpoint_file import datamodule_state, load_checkpoint
from dlforge.errors import CheckpointError, ConfigError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<mask>", "<cls>", "<eos>")
TokenizerKind = Literal["char", "bpe"]
# The smallest vocabularies that make sense: the specials plus one char, or plus all 256 bytes.
MIN_VOCAB_SIZE = {"char": len(SPECIAL_TOKENS) + 1, "bpe": len(SPECIAL_TOKENS) + 256}


class Tokenizer:
    """Text <-> token ids. `decode` drops special tokens (including unk)."""

    pad_id, unk_id, mask_id, cls_id, eos_id = range(len(SPECIAL_TOKENS))

    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        self.hf.encode_special_tokens = True  # not part of the JSON: set on every load

    @property
    def kind(self) -> TokenizerKind:
        return "char" if isinstance(self.hf.model, models.WordLevel) else "bpe"

    @property
    def vocab_size(self) -> int:
        """The number of ids in use; at most the configured size (a corpus may have fewer chars)."""
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts in parallel threads."""
        return [encoding.ids for encoding in self.hf.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids])

    def to_json(self) -> str:
        return self.hf.to_str()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()


def tokenizer_from_json(text: str) -> Tokenizer:
    return Tokenizer(HFTokenizer.from_str(text))


def train_tokenizer(kind: TokenizerKind, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A tokenizer fitted to `texts` with at most `vocab_size` ids, specials included.

    char: the `vocab_size - 5` most frequent characters; rarer ones encode to unk.
    bpe: byte-level BPE (GPT-2's scheme): every byte is in the vocabulary, so nothing is unknown.
    """
    if vocab_size < MIN_VOCAB_SIZE[kind]:
        raise ConfigError(
            f"data.vocab_size={vocab_size} is too small for a {kind} tokenizer; use >= {MIN_VOCAB_SIZE[kind]}"
        )
    if kind == "char":
        return Tokenizer(_char_tokenizer(texts, vocab_size))
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    return Tokenizer(hf)


def _char_tokenizer(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    counts = Counter()
    for text in texts:
        counts.update(text)
    # Most frequent first, ties broken by the character, so the same text always gives the same ids.
    kept = sorted(counts, key=lambda char: (-counts[char], char))[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *sorted(kept)])}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m).|\n"), behavior="isolated")  # one piece per char
    hf.decoder = decoders.Fuse()  # join the chars without separators
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    return hf


def saved_tokenizer(checkpoint: dict) -> Tokenizer | None:
    """The tokenizer a checkpoint's run encoded its data with (text datamodules keep it in their state)."""
    state = datamodule_state(checkpoint)
    return tokenizer_from_json(state["tokenizer"]) if "tokenizer" in state else None


def pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of the run whose checkpoint is at `path`."""
    checkpoint = load_checkpoint(path)
    tokenizer = saved_tokenizer(checkpoint)
    if tokenizer is None:
        data = checkpoint["run_config"]["data"]["_target_"]
        raise CheckpointError(f"{path} holds no tokenizer: its run's data ({data}) was not tokenized text")
    return tokenizer

"""Tokenizers: char level and byte-level BPE, round trips, caps, determinism."""

from __future__ import annotations

import pytest

from dlforge.data.tokenizers import (
    SPECIAL_TOKENS,
    Tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)
from dlforge.errors import ConfigError

TEXT = "The quick brown fox jumps over the lazy dog.\n\tdef f(x): return x ** 2  # é, ü\n" * 20


def test_char_tokenizer_round_trip_caps_the_vocabulary_and_maps_rare_chars_to_unk():
    tokenizer = train_tokenizer("char", [TEXT + "Z"], vocab_size=128)
    assert tokenizer.kind == "char" and tokenizer.vocab_size == len(SPECIAL_TOKENS) + len(set(TEXT + "Z"))
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    assert len(tokenizer.encode(TEXT)) == len(TEXT)
    assert tokenizer.encode("<eos>") != [Tokenizer.eos_id]  # text never encodes to a special token
    assert (Tokenizer.pad_id, Tokenizer.unk_id, Tokenizer.mask_id, Tokenizer.cls_id, Tokenizer.eos_id) == (
        0,
        1,
        2,
        3,
        4,
    )

    capped = train_tokenizer("char", [TEXT + "Z"], vocab_size=len(SPECIAL_TOKENS) + 10)
    assert capped.vocab_size == len(SPECIAL_TOKENS) + 10
    ids = capped.encode("Z o")  # "Z" is the rarest char, " " and "o" among the most frequent
    assert ids[0] == Tokenizer.unk_id and Tokenizer.unk_id not in ids[1:]
    assert capped.decode(ids) == " o"  # unk is dropped on decoding

    restored = tokenizer_from_json(capped.to_json())
    assert restored == capped and restored.encode("Z o<eos>") == capped.encode("Z o<eos>")


def test_bpe_tokenizer_round_trips_any_text_and_trains_deterministically():
    tokenizer = train_tokenizer("bpe", [TEXT], vocab_size=300)
    assert tokenizer.kind == "bpe" and tokenizer.vocab_size == 300
    unseen = "Ünïcödé 日本語 🙂\r\n<mask> tabs\t"
    for text in (TEXT, unseen):
        assert tokenizer.decode(tokenizer.encode(text)) == text  # byte level: nothing is unknown
    assert len(tokenizer.encode(TEXT)) < len(TEXT) / 2  # merges learnt from the text compress it
    assert [tokenizer.hf.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert train_tokenizer("bpe", [TEXT], vocab_size=300).to_json() == tokenizer.to_json()
    assert tokenizer_from_json(tokenizer.to_json()).encode(unseen) == tokenizer.encode(unseen)
    with pytest.raises(ConfigError, match="vocab_size=200 is too small for a bpe tokenizer; use >= 261"):
        train_tokenizer("bpe", [TEXT], vocab_size=200)

"""Causal language modelling: tokenizers, corpora, memory-mapped token streams and their orderings, the
GPT/LLaMA network (causality, rotary positions, KV cache), and the scripts end to end (training to a
loss, fast dev runs, generation from a checkpoint). The causal-LM objective is tested in test_objectives.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_ok, read_metrics, run_dirs, run_script
from dlforge.data.sources import corpora
from dlforge.data.sources.corpora import PydocTopics, TinyShakespeare
from dlforge.data.text import ContiguousRows, LanguageModelData, RandomWindows
from dlforge.errors import ConfigError, DataError
from dlforge.tasks.generate import generate, load_language_model, sample
from dlforge.nets.layers.positions import apply_rotary, rotary_tables
from dlforge.nets.text.gpt import GPT
from dlforge.data.tokenizers import SPECIAL_TOKENS, Tokenizer, tokenizer_from_json, train_tokenizer

TEXT = "The quick brown fox jumps over the lazy dog.\n\tdef f(x): return x ** 2  # é, ü\n" * 20


# --- tokenizers ----------------------------------------------------------------------------------

def test_char_tokenizer_round_trip_caps_the_vocabulary_and_maps_rare_chars_to_unk():
    tokenizer = train_tokenizer("char", [TEXT + "Z"], vocab_size=128)
    assert tokenizer.kind == "char" and tokenizer.vocab_size == len(SPECIAL_TOKENS) + len(set(TEXT + "Z"))
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    assert len(tokenizer.encode(TEXT)) == len(TEXT)
    assert tokenizer.encode("<eos>") != [Tokenizer.eos_id]  # text never encodes to a special token
    assert (Tokenizer.pad_id, Tokenizer.unk_id, Tokenizer.mask_id, Tokenizer.cls_id, Tokenizer.eos_id) == (0, 1, 2, 3, 4)

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


# --- corpora -------------------------------------------------------------------------------------

def test_pydoc_corpus_is_real_text_joined_the_same_way_every_time(tmp_path):
    text = PydocTopics().text(tmp_path, download=False)
    assert len(text) > 300_000 and "The \"assert\" statement" in text
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


# --- token streams -------------------------------------------------------------------------------

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
    assert {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in directory.iterdir()} == files  # not rewritten
    assert again.tokenizer == data.tokenizer

    bpe = LanguageModelData(PydocTopics(), root=str(tmp_path), tokenizer="bpe", vocab_size=400)
    bpe.setup("fit")
    assert (tmp_path / "pydoc_topics" / "bpe-400" / "train.bin").is_file()
    assert 1.5 < bpe.chars_per_token["train"] < 4


def test_contiguous_rows_continue_from_batch_to_batch_and_split_between_ranks():
    stream = np.arange(1000, dtype=np.uint32)
    per_rank = [list(ContiguousRows(stream, block_size=8, batch_size=3, rank=rank, world_size=2)) for rank in (0, 1)]
    rows = {}
    for rank, batches in enumerate(per_rank):
        assert len(batches) == (1000 // 6 - 1) // 8
        for inputs, targets in batches:
            assert inputs.shape == targets.shape == (3, 8) and inputs.dtype == torch.int64
            assert torch.equal(targets[:, :-1], inputs[:, 1:])
        inputs = torch.cat([batch[0] for batch in batches], dim=1)  # each row read batch after batch
        for row in inputs:
            rows[int(row[0])] = row
            assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + len(row)))  # no gap, no repeat
    assert sorted(rows) == [i * (1000 // 6) for i in range(6)]  # 6 distinct rows over both ranks


def test_random_windows_follow_seed_epoch_and_rank():
    stream = np.arange(10_000, dtype=np.uint16)

    def windows(seed, epoch, rank):
        return torch.cat([inputs for inputs, _ in RandomWindows(stream, 16, 4, 10, seed, epoch, rank, world_size=2)])

    first = windows(seed=0, epoch=0, rank=0)
    assert first.shape == (5 * 4, 16)  # 10 batches per epoch, shared by 2 ranks
    assert torch.equal(first, windows(0, 0, 0))
    for other in (windows(1, 0, 0), windows(0, 1, 0), windows(0, 0, 1)):
        assert not set(first[:, 0].tolist()) & set(other[:, 0].tolist())  # different windows
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
    other = train_tokenizer("char", [TEXT], 128)
    with pytest.raises(DataError, match="differs from the checkpoint"):
        data.load_state_dict({"tokenizer": other.to_json()})


# --- the network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_future_tokens_do_not_change_earlier_logits(arch):
    torch.manual_seed(0)
    net = GPT(vocab_size=50, block_size=32, depth=2, heads=2, dim=32, arch=arch).eval()
    tokens = torch.randint(0, 50, (2, 32))
    changed = tokens.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 50
    logits, changed_logits = net(tokens), net(changed)
    assert torch.allclose(logits[:, :20], changed_logits[:, :20], atol=1e-6)
    assert not torch.allclose(logits[:, 20:], changed_logits[:, 20:], atol=1e-3)


def test_rotary_attention_scores_depend_on_relative_position_only():
    cos, sin = rotary_tables(head_dim=16, length=64)
    q, k = torch.randn(16), torch.randn(16)

    def score(query_position, key_position):
        rotated_q = apply_rotary(q, cos[query_position], sin[query_position])
        rotated_k = apply_rotary(k, cos[key_position], sin[key_position])
        return torch.dot(rotated_q, rotated_k)

    assert torch.allclose(score(10, 3), score(40, 33), atol=1e-5)
    assert not torch.allclose(score(10, 3), score(10, 4), atol=1e-3)
    assert torch.allclose(score(0, 0), torch.dot(q, k), atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_generation_with_kv_cache_equals_generation_without(arch):
    torch.manual_seed(0)
    net = GPT(vocab_size=60, block_size=24, depth=2, heads=2, dim=32, arch=arch).eval()
    with torch.no_grad():  # weights far from their small init, so greedy decoding walks through many tokens
        for matrix in (parameter for parameter in net.parameters() if parameter.ndim == 2):
            matrix.normal_(0, 0.3)
    prompt = torch.randint(0, 60, (30,)).tolist()  # longer than the block: the window restarts too
    outputs = [generate(net, prompt, 60, temperature=0, use_kv_cache=cached) for cached in (True, False)]
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 60 and len(set(outputs[0])) > 5  # a real sequence, not one repeated token


def test_sampling_keeps_to_the_top_k_and_the_nucleus():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0])  # probabilities .02 .05 .14 .39 .39
    generator = torch.Generator().manual_seed(0)

    def draws(top_k=None, top_p=None):
        return {sample(logits, 1.0, top_k, top_p, generator) for _ in range(300)}

    assert draws() == {0, 1, 2, 3, 4}
    assert draws(top_k=2) == draws(top_p=0.5) == {3, 4}
    assert draws(top_p=0.8) == {2, 3, 4}
    assert sample(logits, 0.0, None, None, None) == 3  # greedy


# --- end to end, through the scripts -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_char_gpt(tmp_path_factory) -> Path:
    """The default `model=gpt` run shortened to 400 optimizer steps, the first 100 still warming up."""
    log_dir = tmp_path_factory.mktemp("gpt") / "outputs"
    result = run_script("train", "model=gpt", "trainer.max_epochs=4", "scheduler.warmup_fraction=0.25", "logger=csv", log_dir=log_dir)
    assert_ok(result)
    (run_dir,) = run_dirs(log_dir)
    return run_dir


def test_char_gpt_learns_within_a_step_budget(trained_char_gpt):
    metrics = read_metrics(trained_char_gpt)
    # Nats per char: guessing uniformly is ln(108) = 4.7; the train text's own char bigram statistics
    # give 2.48 (unigram 3.25). Seen: 2.10.
    assert metrics["best val/loss"] < 2.2, metrics
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2))
    assert metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-5)
    checkpoint = torch.load(trained_char_gpt / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 400
    saved = tokenizer_from_json(checkpoint["LanguageModelData"]["tokenizer"])
    assert saved == tokenizer_from_json((trained_char_gpt / "tokenizer.json").read_text())


def _generate(ckpt: Path, log_dir: Path, *overrides: str) -> tuple[str, dict]:
    assert_ok(run_script("generate", f"ckpt_path={ckpt}", *overrides, log_dir=log_dir))
    run_dir = run_dirs(log_dir, "generate")[-1]
    return (run_dir / "sample.txt").read_text(), read_metrics(run_dir)


def test_generate_script_samples_deterministically_and_the_cache_changes_nothing(trained_char_gpt, tmp_path):
    ckpt = trained_char_gpt / "checkpoints" / "best.ckpt"
    greedy = ["temperature=0", "max_new_tokens=150", 'prompt="def "']
    cached, _ = _generate(ckpt, tmp_path, *greedy, "use_kv_cache=true")
    uncached, _ = _generate(ckpt, tmp_path, *greedy, "use_kv_cache=false")
    assert cached == uncached and cached.startswith("def ") and len(cached) == 4 + 150

    sampled, metrics = _generate(ckpt, tmp_path, "seed=3", "max_new_tokens=100", 'prompt="def "')
    assert metrics["new tokens"] == 100 and sampled != cached[: len(sampled)]  # sampled, not greedy
    net, tokenizer = load_language_model(str(ckpt))  # the script's sampling, repeated here with the same seed

    def sample_text(seed: int) -> str:
        prompt = tokenizer.encode("def ")
        new = generate(net, prompt, 100, temperature=0.8, top_k=50, top_p=0.95, eos_id=tokenizer.eos_id,
                       vocab_size=tokenizer.vocab_size, generator=torch.Generator().manual_seed(seed))
        return tokenizer.decode(prompt + new)

    assert sample_text(3) == sampled != sample_text(4)


def test_ddp_fast_dev_run(log_dir):
    """Two processes (the in-process fast dev runs of every model are test_models.py's)."""
    result = run_script("train", "model=gpt", "debug=fast_dev_run", "trainer=ddp", log_dir=log_dir)
    assert_ok(result)
    metrics = read_metrics(run_dirs(log_dir)[0])
    assert math.log(20) < metrics["test/loss"] < math.log(128) + 0.5  # near uniform after one step

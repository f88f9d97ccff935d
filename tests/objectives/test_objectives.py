"""Objectives: the net contract each one checks, a recurrent decoder's cache carried per stage, fine-tuning
from a pretrained net and freezing for every objective, and the sample media and test artifacts that
MediaLogger writes into the run dir and shows in W&B (a stand-in run object records what would be sent)."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import wandb
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlforge.callbacks.media import MediaLogger
from dlforge.data.tokenizers import SPECIAL_TOKENS, Tokenizer, train_tokenizer
from dlforge.errors import CheckpointError, ConfigError
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.nets.vision.cnn import CNN
from dlforge.objectives.causal_lm import CausalLM
from dlforge.objectives.classification import Classifier
from dlforge.objectives.masked_lm import MaskedLM

SENTENCES = ["the cat sat", "a dog ran off", "birds sing", "fish swim deep"]
TOKENIZER = train_tokenizer("char", SENTENCES, 40)
VOCAB = TOKENIZER.vocab_size


class ToyDecoder(nn.Module):
    """A Decoder in miniature. Recurrent, its cache holds the last hidden state of the previous segment
    (detached), which is added to the next segment's."""

    block_size = None

    def __init__(self, recurrent: bool = False, dim: int = 8):
        super().__init__()
        self.vocab_size = VOCAB
        self.recurrent = recurrent
        self.embedding = nn.Embedding(VOCAB, dim)
        self.out = nn.Linear(dim, VOCAB)
        self.calls: list[tuple[SimpleNamespace | None, torch.Tensor | None]] = []  # (cache, what it carried in)

    def new_cache(self) -> SimpleNamespace:
        return SimpleNamespace(hidden=None)

    def forward(self, tokens: torch.Tensor, cache: SimpleNamespace | None = None) -> torch.Tensor:
        carried = None if cache is None else cache.hidden
        self.calls.append((cache, carried))
        hidden = self.embedding(tokens) + (0 if carried is None else carried[:, -1:])
        if cache is not None:
            cache.hidden = hidden.detach()
        return self.out(hidden)


class TinyData(LightningDataModule):
    """The same few examples as train, val and test split, one batch each; `tokenizer` for text."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.examples = TensorDataset(inputs, targets)
        self.tokenizer = tokenizer

    def train_dataloader(self):
        return DataLoader(self.examples, batch_size=len(self.examples))

    val_dataloader = test_dataloader = train_dataloader


def images() -> TinyData:
    generator = torch.Generator().manual_seed(0)
    return TinyData(torch.randn(6, 1, 8, 8, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2]))


def labelled_sentences() -> TinyData:
    """Sentences as a text classification batch: the cls token, the text, padding."""
    rows = [[Tokenizer.cls_id, *TOKENIZER.encode(text)] for text in SENTENCES]
    tokens = torch.full((len(rows), 16), Tokenizer.pad_id)
    for row, ids in zip(tokens, rows):
        row[: len(ids)] = torch.tensor(ids)
    return TinyData(tokens, torch.tensor([0, 1, 0, 1]), TOKENIZER)


def windows() -> TinyData:
    """Language-model batches: windows of the text and the windows one token on."""
    stream = torch.tensor(TOKENIZER.encode(" ".join(SENTENCES)))
    starts = range(0, 4 * 9, 9)
    return TinyData(
        torch.stack([stream[s : s + 8] for s in starts]),
        torch.stack([stream[s + 1 : s + 9] for s in starts]),
        TOKENIZER,
    )


def small_cnn() -> CNN:
    return CNN(in_channels=1, channels=[4, 8], convs_per_stage=1, image_size=8)


def encoder() -> TransformerEncoder:
    return TransformerEncoder(vocab_size=VOCAB, max_length=16, dim=16, depth=1, heads=2)


def fit(model, data: TinyData, steps: int = 2, **trainer_options) -> None:
    options = {"limit_val_batches": 0, **trainer_options}
    Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    ).fit(model, data)


# --- net contracts -------------------------------------------------------------------------------


def test_each_objective_refuses_a_net_without_its_contract_in_one_line():
    with pytest.raises(
        ConfigError,
        match=r"^model.net: torch.nn.modules.container.Sequential is not a Backbone, "
        r"which Classifier needs \(it lacks out_features\)$",
    ):
        Classifier(nn.Sequential(), num_classes=2)
    with pytest.raises(
        ConfigError,
        match=r"^model.net: dlforge.nets.vision.cnn.CNN is not a TokenEncoder, which "
        r"MaskedLM needs \(it lacks hidden_states, token_embedding, vocab_size\)$",
    ):
        MaskedLM(small_cnn())
    with pytest.raises(
        ConfigError,
        match=r"TransformerEncoder is not a Decoder, which CausalLM needs "
        r"\(it lacks block_size, new_cache, recurrent\)$",
    ):
        CausalLM(encoder())
    # what meets a contract is accepted, a submodule (the encoder's token_embedding) counting as a member
    (
        Classifier(small_cnn(), num_classes=2),
        Classifier(encoder(), num_classes=2),
        MaskedLM(encoder()),
        CausalLM(ToyDecoder()),
    )


# --- causal LM: a recurrent decoder's cache ------------------------------------------------------


def test_causal_lm_carries_a_recurrent_cache_per_stage_and_renews_it_each_epoch():
    net = ToyDecoder(recurrent=True)
    model = CausalLM(net)
    batch = next(iter(windows().train_dataloader()))
    model.on_train_epoch_start()
    model.training_step(batch, 0).backward()
    model.training_step(batch, 1).backward()
    (first_cache, first_carried), (cache, carried) = net.calls
    assert first_cache is cache and first_carried is None  # one cache through the epoch, new at its start
    assert carried is not None and not carried.requires_grad  # gradients stop at the segment boundary
    model.on_validation_epoch_start()
    model.validation_step(batch, 0)
    assert net.calls[-1][0] is not cache and net.calls[-1][1] is None  # validation reads with its own cache
    model.training_step(batch, 2)
    assert net.calls[-1][0] is cache and net.calls[-1][1] is not None  # training goes on where it was
    model.on_train_epoch_start()
    model.training_step(batch, 0)
    assert net.calls[-1][1] is None


def test_causal_lm_calls_a_decoder_that_is_not_recurrent_without_a_cache():
    net = ToyDecoder(recurrent=False)
    fit(CausalLM(net, optimizer=partial(torch.optim.SGD, lr=0.1)), windows(), limit_val_batches=1)
    assert net.calls and all(cache is None for cache, _ in net.calls)


# --- fine-tuning and freezing, for every objective -----------------------------------------------


def save_net(path: Path, net: nn.Module) -> Path:
    """A checkpoint as a run writes it, as far as fine-tuning reads it: the net's weights, the run config."""
    torch.save(
        {
            "state_dict": {f"net.{key}": value for key, value in net.state_dict().items()},
            "run_config": {"data": {"_target_": "TinyData"}, "model": {"net": {"_target_": type(net).__name__}}},
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    "objective,make_net,data,freeze",
    [
        (partial(Classifier, num_classes=2), encoder, labelled_sentences, "all"),
        (MaskedLM, encoder, windows, "all"),
        (CausalLM, ToyDecoder, windows, "embeddings"),
    ],
)
def test_fine_tuning_starts_from_the_pretrained_net_and_trains_only_what_is_not_frozen(
    objective, make_net, data, freeze, tmp_path
):
    torch.manual_seed(0)
    pretrained = make_net()
    path = save_net(tmp_path / "pretrained.ckpt", pretrained)
    model = objective(make_net(), optimizer=partial(torch.optim.SGD, lr=0.5), pretrained=str(path), freeze=freeze)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fit(model, data())
    after, pretrained_weights = (
        model.state_dict(),
        {f"net.{key}": value for key, value in pretrained.state_dict().items()},
    )
    embeddings = {f"{name}.weight" for name, module in pretrained.named_modules() if isinstance(module, nn.Embedding)}
    frozen = [f"net.{key}" for key, _ in pretrained.named_parameters() if freeze == "all" or key in embeddings]
    assert frozen and not all(torch.equal(before[key], pretrained_weights[key]) for key in frozen)  # norms start equal
    assert all(torch.equal(after[key], pretrained_weights[key]) for key in frozen)  # loaded, then kept
    trained = [key for key, parameter in model.named_parameters() if parameter.requires_grad]
    assert trained and not set(trained) & set(frozen)
    assert all(not torch.equal(after[key], before[key]) for key in trained)


def test_channels_last_trains_the_same_weights_and_they_load_into_a_contiguous_net(tmp_path):
    trained = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = Classifier(
            small_cnn(), num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.5), channels_last=channels_last
        )
        fit(model, images(), steps=3)
        trained[channels_last] = model.state_dict()
    convs = [value for key, value in trained[True].items() if value.ndim == 4]
    assert convs and all(value.is_contiguous(memory_format=torch.channels_last) for value in convs)
    assert not all(value.is_contiguous() for value in convs)
    assert trained[True].keys() == trained[False].keys()
    for key, value in trained[False].items():
        torch.testing.assert_close(trained[True][key], value, msg=key)
    torch.save(trained[True], tmp_path / "weights.pt")
    loaded = Classifier(small_cnn(), num_classes=3)
    loaded.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    inputs = images().examples.tensors[0]
    model = Classifier(small_cnn(), num_classes=3, channels_last=True)
    model.load_state_dict(trained[True])
    torch.testing.assert_close(loaded.eval()(inputs), model.eval()(inputs))


def test_freezing_everything_a_causal_lm_has_leaves_nothing_to_train():
    model = CausalLM(ToyDecoder(), optimizer=partial(torch.optim.SGD, lr=0.1), freeze="all")
    with pytest.raises(ConfigError, match=r"^model.freeze=all: nothing of CausalLM is left to train$"):
        fit(model, windows())


def test_a_pretrained_net_of_another_shape_is_refused_naming_the_keys(tmp_path):
    path = save_net(tmp_path / "pretrained.ckpt", ToyDecoder(dim=4))
    model = CausalLM(ToyDecoder(dim=8), optimizer=partial(torch.optim.SGD, lr=0.1), pretrained=str(path))
    with pytest.raises(
        CheckpointError, match=r"embedding.weight is \(\d+, 4\) in the checkpoint but \(\d+, 8\) in model.net"
    ):
        fit(model, windows())


# --- sample media and test artifacts in W&B ------------------------------------------------------


class RecordingRun:
    """Stands in for a W&B run (no wandb process, no files): keeps what is logged to it."""

    id, name = "recording", "recording"

    def __init__(self):
        self.logged: dict = {}
        self.config = SimpleNamespace(update=lambda *args, **kwargs: None)

    def log(self, data: dict, *args, **kwargs) -> None:
        self.logged.update(data)


def logged_media(model, data: TinyData, directory: Path, samples: int = 3) -> dict:
    """What MediaLogger sends to W&B when `model` is tested on `data` (its files go to `directory`)."""
    run = RecordingRun()
    trainer = Trainer(
        accelerator="cpu",
        logger=WandbLogger(experiment=run),
        callbacks=[MediaLogger(directory, samples)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, data)
    model.eval()  # as in testing, for the comparisons
    return run.logged


def test_media_of_an_image_classifier_are_captioned_predictions_and_the_confusion_matrix(tmp_path):
    torch.manual_seed(0)
    model, data = Classifier(small_cnn(), num_classes=3), images()
    logged = logged_media(model, data, tmp_path)
    inputs, targets = data.examples.tensors
    predicted = model(inputs).argmax(-1)
    assert wandb.Image.all_captions(logged["test/predictions"]) == [
        f"predicted {guess} / true {true}" for guess, true in zip(predicted[:3].tolist(), targets[:3].tolist())
    ]
    assert isinstance(logged["test/confusion_matrix"], wandb.Image)
    (confusion,) = model.test_artifacts()
    assert confusion.matrix.sum() == 6 and confusion.matrix.diagonal().sum() == (predicted == targets).sum()


def test_every_rank_computes_the_sample_media_on_rank_zeros_inputs_and_rank_zero_alone_keeps_them(tmp_path):
    """A sharded model (FSDP) gathers each layer from every rank in its forward: a forward on rank 0 alone would
    wait forever. Here rank 1, with a batch of its own, gets rank 0's inputs."""
    torch.manual_seed(0)
    model, data = Classifier(small_cnn(), num_classes=3), images()
    inputs, targets = data.examples.tensors
    forwards = []
    model.register_forward_hook(lambda module, arguments, output: forwards.append(arguments[0]))
    from_rank_zero = SimpleNamespace(broadcast=lambda head: [inputs[:3], targets[:3]])
    rank_one = SimpleNamespace(is_global_zero=False, strategy=from_rank_zero, datamodule=data, loggers=[])
    media = MediaLogger(tmp_path / "media", samples=3)
    media.on_test_batch_end(rank_one, model, None, [inputs[3:], targets[3:]], 0)
    media.on_test_end(rank_one, model)
    (forward,) = forwards
    assert torch.equal(forward, inputs[:3])
    assert media.media == [] and not (tmp_path / "media").exists()


def test_media_of_a_text_classifier_are_its_inputs_as_text_with_predicted_and_true_class(tmp_path):
    torch.manual_seed(0)
    model, data = Classifier(encoder(), num_classes=2), labelled_sentences()
    table = logged_media(model, data, tmp_path)["test/text_samples"]
    predicted = model(data.examples.tensors[0]).argmax(-1).tolist()
    assert table.columns == ["input", "predicted", "true"]
    assert table.data == [[text, str(guess), str(true)] for text, guess, true in zip(SENTENCES, predicted, [0, 1, 0])]


def test_media_of_a_causal_lm_are_windows_with_greedy_next_tokens(tmp_path):
    torch.manual_seed(0)
    model, data = CausalLM(ToyDecoder()), windows()
    table = logged_media(model, data, tmp_path)["test/text_samples"]
    inputs, targets = data.examples.tensors
    assert table.columns == ["input", "predicted", "true"]
    assert [row[0] for row in table.data] == [TOKENIZER.decode(window.tolist()) for window in inputs[:3]]
    assert [row[1] for row in table.data] == [TOKENIZER.decode(row.tolist()) for row in model(inputs[:3]).argmax(-1)]
    assert [row[2] for row in table.data] == [TOKENIZER.decode(window.tolist()) for window in targets[:3]]


def test_media_of_a_masked_lm_mark_the_selected_tokens_as_read_predicted_and_true(tmp_path):
    torch.manual_seed(0)
    model, data = MaskedLM(encoder(), mask_fraction=0.3), windows()
    table = logged_media(model, data, tmp_path)["test/masked_samples"]
    tokens = data.examples.tensors[0][:3]
    inputs, selected = model.mask(tokens, static=True)  # the test's masks: static
    guesses = iter(model(inputs, selected).argmax(-1).tolist())

    def marked(text: str) -> list[str]:
        return re.findall("⟦(.*?)⟧", text)

    def shown(token: int) -> str:
        return TOKENIZER.decode([token]) or SPECIAL_TOKENS[token]  # decode drops special tokens

    assert table.columns == ["input", "predicted", "true"] and len(table.data) == 3
    for (read, guessed, true), window, corrupted, where in zip(table.data, tokens, inputs, selected):
        chosen = where.nonzero().flatten().tolist()
        assert re.sub("[⟦⟧]", "", true) == TOKENIZER.decode(window.tolist())
        assert marked(true) == [shown(window[i]) for i in chosen]
        assert marked(read) == [shown(corrupted[i]) for i in chosen]
        assert marked(guessed) == [shown(next(guesses)) for _ in chosen]
    assert "⟦<mask>⟧" in "".join(row[0] for row in table.data)


def test_media_are_files_in_the_run_dir_also_without_a_logger(tmp_path):
    """The run's report shows them whatever the loggers: pictures as PNGs, tables as JSON."""
    torch.manual_seed(0)
    trainer = Trainer(accelerator="cpu", logger=False, callbacks=[MediaLogger(tmp_path)], enable_progress_bar=False)
    trainer.test(Classifier(small_cnn(), num_classes=3), images())
    for name in ("test/predictions.png", "test/confusion_matrix.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    trainer = Trainer(accelerator="cpu", logger=False, callbacks=[MediaLogger(tmp_path)], enable_progress_bar=False)
    trainer.test(Classifier(encoder(), num_classes=2), labelled_sentences())
    table = json.loads((tmp_path / "test" / "text_samples.json").read_text())
    assert table["columns"] == ["input", "predicted", "true"] and [row[0] for row in table["rows"]] == SENTENCES

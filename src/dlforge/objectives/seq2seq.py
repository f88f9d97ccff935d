"""Sequence to sequence (translation) for any `EncoderDecoder` net: teacher-forced cross-entropy with label
smoothing over the target tokens, and the translations themselves scored as the field scores them.

Batches are `(source, target)` id tensors padded with id 0: a source ends with eos, a target starts with the
start (cls) token and ends with eos. Validation decodes greedily; testing decodes greedily and with beam
search (`dlforge.objectives.translating`). Translations and references are detokenized (decoded to text) and
scored with torchmetrics' SacreBLEU (the `13a` tokenizer, sacrebleu's default: what papers report) and chrF,
and by exact match (the share of translations equal to their reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import CHRFScore, SacreBLEUScore

from dlforge.data.tokenizers import Tokenizer
from dlforge.errors import ConfigError
from dlforge.nets.contracts import EncoderDecoder
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory, data_tokenizer
from dlforge.objectives.media import Heatmap, Media, Table
from dlforge.objectives.metrics import log_train_loss
from dlforge.objectives.translating import MAX_LENGTH_OFFSET, MAX_LENGTH_RATIO, beam_search, greedy, max_lengths

ATTENTION_MAPS = 4  # test sentences whose attention maps are drawn


def text_metrics() -> nn.ModuleDict:
    """BLEU and chrF as sacrebleu computes them by default, on its 0-100 scale: BLEU with the 13a tokenizer, chrF
    over character 6-grams without word n-grams (torchmetrics' default of 2 word orders is chrF++)."""
    return nn.ModuleDict(
        {
            "bleu": SacreBLEUScore(tokenize="13a") * 100,
            "chrf": CHRFScore(n_word_order=0) * 100,
            "exact": MeanMetric(),
        }
    )


class Seq2Seq(Objective):
    """Logs `train/loss` and, for val and test, `loss` (label-smoothed cross-entropy per target token, as in
    training), `bleu` (0-100), `chrf` (0-100) and `exact` (0-1) of greedy translations; test adds
    `bleu_beam`, `chrf_beam` and `exact_beam` of beam search translations (`beam_size`, GNMT length penalty
    `length_penalty`). `label_smoothing` 0.1 as Vaswani et al. 2017."""

    net_contract = EncoderDecoder
    default_monitor = ("val/bleu", "max")

    def __init__(
        self,
        net: nn.Module,
        label_smoothing: float = 0.1,
        beam_size: int = 5,
        length_penalty: float = 0.6,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile)
        if beam_size < 1 or not 0 <= label_smoothing < 1:
            raise ConfigError(
                f"model.beam_size={beam_size}, model.label_smoothing={label_smoothing}: need beam_size >= 1 and "
                "0 <= label_smoothing < 1"
            )
        self.label_smoothing, self.beam_size, self.length_penalty = label_smoothing, beam_size, length_penalty
        self.losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.scores = nn.ModuleDict(
            {"val": text_metrics(), "test": text_metrics(), "test_beam": text_metrics()}  # test_beam: test/*_beam
        )
        self.tokenizer: Tokenizer | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.tokenizer = data_tokenizer(self.trainer.datamodule)
        if self.tokenizer is None:
            raise ConfigError(f"data: {type(self.trainer.datamodule).__name__} is not tokenized text; Seq2Seq needs it")

    def forward(self, source: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(source, target)

    def _loss(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss per target token, and the number of target tokens."""
        logits = self(source, target[:, :-1])
        labels = target[:, 1:]
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=Tokenizer.pad_id,
            label_smoothing=self.label_smoothing,
        )
        return loss, (labels != Tokenizer.pad_id).sum()

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(*trimmed(*batch))
        log_train_loss(self, loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)
        source, target = trimmed(*batch)
        self._score("test_beam", self.translate(source, self.beam_size), target)

    def _evaluate(self, stage: str, batch) -> None:
        source, target = trimmed(*batch)
        loss, count = self._loss(source, target)
        self.losses[stage].update(loss, weight=count)
        self.log(f"{stage}/loss", self.losses[stage], prog_bar=True)
        self._score(stage, self.translate(source, 1), target)

    def _score(self, key: str, translations: list[str], target: torch.Tensor) -> None:
        references = self.references(target)
        scores = self.scores[key]
        scores["bleu"].update(translations, [[reference] for reference in references])
        scores["chrf"].update(translations, [[reference] for reference in references])
        scores["exact"].update(torch.tensor([float(a == b) for a, b in zip(translations, references)]))
        stage, suffix = key.split("_")[0], "_beam" if key.endswith("_beam") else ""
        for name, metric in scores.items():
            self.log(f"{stage}/{name}{suffix}", metric, prog_bar=name == "bleu", batch_size=len(references))

    def translate(self, source: torch.Tensor, beam_size: int) -> list[str]:
        """Each source row's translation as text: greedy for beam_size 1, else beam search."""
        ids = (self.tokenizer.cls_id, self.tokenizer.eos_id)
        if beam_size == 1:
            outputs = greedy(self.net, source, *ids)
        else:
            outputs = beam_search(self.net, source, *ids, beam_size=beam_size, alpha=self.length_penalty)
        return [self.tokenizer.decode(tokens) for tokens in outputs]

    def references(self, target: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row) for row in target.tolist()]  # decode drops the special tokens

    def sample_media(self, batch, tokenizer: Tokenizer | None) -> list[Media]:
        """Sources, references, and greedy and beam translations of the first test pairs; the attention maps of
        the first `ATTENTION_MAPS` beam translations."""
        source, target = trimmed(*batch)
        ids = (self.tokenizer.cls_id, self.tokenizer.eos_id)
        beams = beam_search(self.net, source, *ids, beam_size=self.beam_size, alpha=self.length_penalty)
        columns = [
            [tokenizer.decode(row) for row in source.tolist()],
            self.references(target),
            self.translate(source, 1),
            [tokenizer.decode(tokens) for tokens in beams],
        ]
        rows = [list(row) for row in zip(*columns)]
        beam = f"beam {self.beam_size}"
        table = Table("test/translations", ["source", "reference", "greedy", beam], rows)
        return [table, *self.attention_maps(source[:ATTENTION_MAPS], beams, f"{beam} translation")]

    def attention_maps(self, source: torch.Tensor, translations: list[list[int]], kind: str) -> list[Heatmap]:
        """What the decoder attends to in each source row while it writes its translation (ids without start
        and eos, as decoding returns them): `test/attention/<n>`, a row per token written (its eos included
        when it ended there, not at the length limit), a column per source token."""
        limits = max_lengths(source, Tokenizer.pad_id, MAX_LENGTH_RATIO, MAX_LENGTH_OFFSET)
        maps = []
        for number, (row, tokens, limit) in enumerate(zip(source, translations, limits)):
            row = row[row != Tokenizer.pad_id]
            written = [*tokens, self.tokenizer.eos_id] if len(tokens) < limit else tokens
            target = torch.tensor([[self.tokenizer.cls_id, *written[:-1]]], device=row.device)
            weights = self.net.cross_attention(row[None], target)[0]
            labels = pieces(self.tokenizer, written), pieces(self.tokenizer, row.tolist())
            maps.append(Heatmap(f"test/attention/{number}", weights.float().cpu(), *labels, (kind, "source")))
        return maps


def pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Each token as the text it stands for, to label pictures: a leading space shown as "▁" (the word starts
    there); a special token, a control character or a byte that is part of a character by its name in the
    vocabulary (byte-level BPE names every byte by a printable character)."""
    texts = []
    for token in ids:
        text = tokenizer.decode([token])
        # decode drops specials; a lone byte of a character decodes to U+FFFD
        if not text or "\ufffd" in text or not text.isprintable():
            text = tokenizer.hf.id_to_token(token)
        texts.append(text.replace(" ", "▁"))
    return texts


def trimmed(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch without the columns that are padding in every row (splits are padded to their longest pair)."""
    pad = Tokenizer.pad_id
    return source[:, : int((source != pad).sum(1).max())], target[:, : int((target != pad).sum(1).max())]

"""Contrastive text-image training (CLIP) of any `DualEncoder`: symmetric InfoNCE over a batch of (image,
caption) pairs, every other caption of the batch a negative for an image and the other way round. Under DDP
the embeddings of all processes are gathered (with their gradients), so the logits matrix is the global
batch's, as in one process.

Evaluation: recall@1 and @5 of image->text and text->image retrieval over a split's pairs (a caption counts
as found when its text equals the query's own: template captions repeat), and zero-shot classification of
the data's labelled images (`ZeroShotData`) against the mean embedding of each class's prompts."""

from __future__ import annotations

import math
from typing import Annotated, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.retrieval import RetrievalHitRate
from torchmetrics.utilities import dim_zero_cat

from dlforge.constraints import Positive
from dlforge.data.tokenizers import Tokenizer
from dlforge.errors import ConfigError
from dlforge.nets.contracts import DualEncoder
from dlforge.objectives.base import Freeze, Objective, OptimizerFactory, SchedulerFactory
from dlforge.objectives.media import ConfusionMatrix, Images, Media
from dlforge.objectives.metrics import log_train_loss, logs_written_this_step

RECALL_AT = (1, 5)


@runtime_checkable
class ZeroShotData(Protocol):
    """A datamodule with labelled images to classify from class prompts."""

    prompt_tokens: Tensor | None  # (classes, templates, length): each class's prompts, as token ids
    categories: list[str]  # class names

    def zero_shot_loader(self, split: str) -> DataLoader:
        """This process's share of `split`'s (images, labels) batches."""
        ...


class PairRetrieval(Metric):
    """Recall@k of image->text and text->image retrieval among all pairs seen since the last reset (synced
    over processes): `i2t_r{k}`, `t2i_r{k}`. The relevant items of a query are those whose caption (as token
    ids) equals its own pair's."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("images", "texts", "tokens"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        # CLIP's R@k: a query is found when any relevant item is in its top k, torchmetrics' hit rate (its
        # RetrievalRecall divides by the relevant items, all repeats of a template caption)
        self.recalls = nn.ModuleDict({str(k): RetrievalHitRate(top_k=k) for k in RECALL_AT})

    def update(self, images: Tensor, texts: Tensor, tokens: Tensor) -> None:
        self.images.append(images.float())
        self.texts.append(texts.float())
        self.tokens.append(tokens)

    def compute(self) -> dict[str, Tensor]:
        images, texts, tokens = (dim_zero_cat(state) for state in (self.images, self.texts, self.tokens))
        similarity = images @ texts.T
        same = (tokens[:, None] == tokens[None]).all(-1)  # symmetric: same caption text
        queries = torch.arange(len(images), device=images.device).repeat_interleave(len(images))
        scores = {}
        for direction, matrix in (("i2t", similarity), ("t2i", similarity.T)):
            for k, recall in self.recalls.items():
                scores[f"{direction}_r{k}"] = recall(matrix.flatten(), same.flatten(), indexes=queries)
                recall.reset()
        return scores


class LinearProbe(Metric):
    """Test accuracy of a logistic regression (scikit-learn's, L-BFGS, on standardised features) fitted to the
    `train` features and labels, over the `test` ones seen since the last reset (synced over processes):
    CLIP's linear-probe evaluation of a frozen image tower."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("train_features", "train_labels", "test_features", "test_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor, part: str) -> None:
        getattr(self, f"{part}_features").append(features.float())
        getattr(self, f"{part}_labels").append(labels)

    def compute(self) -> Tensor:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        train, test = (
            (
                dim_zero_cat(getattr(self, f"{part}_features")).cpu().numpy(),
                dim_zero_cat(getattr(self, f"{part}_labels")).cpu().numpy(),
            )
            for part in ("train", "test")
        )
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*train)
        return torch.tensor(float(probe.score(*test)))


class Contrastive(Objective):
    """Logs `train/loss`, `train/logit_scale` (1 / temperature) and `train/batch_pairs` (the rows of the
    logits matrix: the global batch), `{val,test}/loss`, `{val,test}/{i2t,t2i}_r{1,5}` over the split's pairs,
    `{val,test}/zero_shot_acc` over the data's zero-shot images, and `test/linear_probe_acc`: a linear probe on
    the frozen image tower's features (fitted to the data's `probe` images), the supervised reference. The
    test artifact is the zero-shot confusion matrix. The temperature is learned: its log-inverse starts at
    log(1 / `temperature`) and the scale is clamped at `max_logit_scale` (open_clip's convention).
    `num_classes`: the zero-shot classes (None: no zero-shot metrics)."""

    net_contract = DualEncoder
    default_monitor = ("val/zero_shot_acc", "max")

    def __init__(
        self,
        net: nn.Module,
        num_classes: Annotated[int, Positive] | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        temperature: Annotated[float, Positive] = 0.07,
        max_logit_scale: Annotated[float, Positive] = 100.0,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
        channels_last: bool = False,
    ):
        super().__init__(net, optimizer, scheduler, pretrained, freeze, compile, channels_last=channels_last)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.max_logit_scale = max_logit_scale
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_retrieval, self.test_retrieval = PairRetrieval(), PairRetrieval()
        self.num_classes = num_classes
        if num_classes is not None:
            self.val_zero_shot = MulticlassAccuracy(num_classes, average="micro")
            self.test_zero_shot = MulticlassAccuracy(num_classes, average="micro")
            self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.linear_probe = LinearProbe()
        self.test_confusion_matrix: Tensor | None = None
        self.batch_pairs = 0

    def forward(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised image and text embeddings, float32."""
        image_embeddings, text_embeddings = self.net(images, tokens)
        return F.normalize(image_embeddings.float(), dim=-1), F.normalize(text_embeddings.float(), dim=-1)

    def scale(self) -> Tensor:
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def logits(self, images: Tensor, texts: Tensor) -> Tensor:
        """Image-by-text logits of the global batch: every process's embeddings gathered, with gradients
        flowing back to the process that made them."""
        if self._trainer is not None and self.trainer.world_size > 1:  # no trainer: a step called by hand
            images = self.all_gather(images, sync_grads=True).flatten(0, 1)
            texts = self.all_gather(texts, sync_grads=True).flatten(0, 1)
        return self.scale() * images @ texts.T

    def loss(self, logits: Tensor) -> Tensor:
        targets = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    def training_step(self, batch, batch_idx):
        images, tokens = batch
        logits = self.logits(*self(images, tokens))
        loss = self.loss(logits)
        self.batch_pairs = len(logits)
        log_train_loss(self, loss)
        if logs_written_this_step(self):
            self.log("train/logit_scale", self.scale().detach())
        return loss

    def on_train_epoch_end(self):
        self.log("train/batch_pairs", float(self.batch_pairs))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_retrieval, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_loss, self.test_retrieval, "test")

    def _evaluate(self, batch, loss_metric: MeanMetric, retrieval: PairRetrieval, split: str) -> None:
        images, tokens = batch
        image_embeddings, text_embeddings = self(images, tokens)
        # the loss over this process's share of the eval batch: its value depends on the batch size
        loss_metric.update(self.loss(self.scale() * image_embeddings @ text_embeddings.T), weight=len(images))
        retrieval.update(image_embeddings, text_embeddings, tokens)
        self.log(f"{split}/loss", loss_metric, prog_bar=True)

    def on_validation_epoch_end(self):
        self._log_retrieval("val", self.val_retrieval)
        if self._zero_shot():
            self._log_zero_shot("val", self.val_zero_shot)

    def on_test_epoch_end(self):
        self._log_retrieval("test", self.test_retrieval)
        if not self._zero_shot():
            return
        self._log_zero_shot("test", self.test_zero_shot, self.test_confusion)
        self.test_confusion_matrix = self.test_confusion.compute().cpu()
        self.test_confusion.reset()
        for images, labels in self._labelled("probe"):
            self.linear_probe.update(self.net.image_features(images), labels, "train")
        self.log("test/linear_probe_acc", self.linear_probe.compute())
        self.linear_probe.reset()

    def _labelled(self, split: str):
        """The datamodule's labelled images of `split` on this process's device, in its precision context."""
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            for images, labels in self.trainer.datamodule.zero_shot_loader(split):
                yield images.to(self.device), labels.to(self.device)

    def _zero_shot(self) -> bool:
        """Whether zero-shot classification is asked for (`num_classes`) and the data has prompts for it."""
        datamodule = self.trainer.datamodule
        if self.num_classes is None or not isinstance(datamodule, ZeroShotData) or datamodule.prompt_tokens is None:
            return False
        if len(datamodule.prompt_tokens) != self.num_classes:
            raise ConfigError(
                f"model.num_classes is {self.num_classes} but the data has {len(datamodule.prompt_tokens)} classes"
            )
        return True

    def _log_retrieval(self, split: str, retrieval: PairRetrieval) -> None:
        self.log_dict({f"{split}/{name}": value for name, value in retrieval.compute().items()}, prog_bar=True)
        retrieval.reset()

    def _log_zero_shot(self, split: str, accuracy: Metric, *more: Metric) -> None:
        classes = self.class_embeddings(self.trainer.datamodule.prompt_tokens.to(self.device))
        for images, labels in self._labelled(split):
            features = self.net.image_features(images)
            logits = F.normalize(self.net.project_image(features).float(), dim=-1) @ classes.T
            for metric in (accuracy, *more):
                metric.update(logits, labels)
            if split == "test":
                self.linear_probe.update(features, labels, "test")
        self.log(f"{split}/zero_shot_acc", accuracy.compute(), prog_bar=True)
        accuracy.reset()

    def class_embeddings(self, prompt_tokens: Tensor) -> Tensor:
        """(classes, templates, length) prompts -> (classes, embed_dim): each class's prompt embeddings,
        normalised, averaged and normalised again (CLIP's prompt ensembling)."""
        classes, templates, length = prompt_tokens.shape
        with self.trainer.precision_plugin.forward_context():
            texts = self.net.encode_text(prompt_tokens.view(classes * templates, length)).float()
        return F.normalize(F.normalize(texts, dim=-1).view(classes, templates, -1).mean(1), dim=-1)

    def test_artifacts(self) -> list[ConfusionMatrix]:
        if self.test_confusion_matrix is None:
            return []
        return [ConfusionMatrix("test/zero_shot_confusion_matrix", self.test_confusion_matrix)]

    def sample_media(self, batch, tokenizer: Tokenizer | None, queries: int = 4, shown: int = 5) -> list[Media]:
        """A retrieval grid: for the first `queries` captions of the batch, the `shown` best images of the
        batch, best first, each captioned with the query (the true image marked)."""
        images, tokens = batch
        image_embeddings, text_embeddings = self(images, tokens)
        ranked = (text_embeddings[:queries] @ image_embeddings.T).topk(min(shown, len(images)), dim=-1).indices
        grid, captions = [], []
        for query, found in enumerate(ranked.tolist()):
            text = tokenizer.decode(tokens[query].tolist()) if tokenizer is not None else f"caption {query}"
            for rank, index in enumerate(found, 1):
                grid.append(images[index])
                mark = " (its image)" if index == query else ""
                captions.append(f"{text} / #{rank}{mark}" if rank == 1 else f"#{rank}{mark}")
        return [Images("test/retrieval", torch.stack(grid).cpu(), captions, columns=ranked.shape[1])]

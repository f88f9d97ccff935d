"""Image-caption pairs for contrastive text-image training, with a zero-shot classification set beside them.

Batches: (images, tokens): images float32 (B, 3, H, W) in [0, 1], tokens int64 (B, max_length): the cls token,
the caption's tokens, pad (id 0) to `max_length`. The zero-shot set (`zero_shot_loader`) gives (images,
labels): Fashion-MNIST images (grey, replicated to 3 channels) scaled to `zero_shot_side` pixels on a black
canvas of the scenes' size; val takes the last `zero_shot_val` training images (the val scenes' objects,
never a training scene's), test the whole untouched test split (or its first `zero_shot_test`), probe the
first `probe_train` training images (a linear probe's training set). Their class prompts (`prompt_tokens`)
are `templates` over the source's class nouns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dlforge.constraints import Positive
from dlforge.data.files import reading
from dlforge.data.sharding import per_process, rank_and_world_size
from dlforge.data.sources.captions import CaptionSource
from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.tensors import SplitsData, TensorBatches, batch_loader
from dlforge.data.tokenizers import Tokenizer, TokenizerKind, tokenizer_from_json, train_tokenizer
from dlforge.errors import DataError

SPLITS = ("train", "val", "test")


class ScaledImages(TensorBatches):
    """uint8 images (and other tensors) held as they are stored, handed out as floats in [0, 1] per batch."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        images, *rest = super().__getitems__(indices)
        return images.float() / 255, *rest

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return self.__getitems__([index])


class CaptionsData(SplitsData):
    """Train/val/test captions of `source` and zero-shot images of `zero_shot` (Fashion-MNIST; None: none, and
    no `prompt_tokens`), held in memory. The tokenizer (`tokenizer`-kind, at most `vocab_size` ids) is trained
    on the training captions and is this module's state: saved in checkpoints and checked on restore.
    `num_classes` (of the zero-shot images) and `image_size` state what the models are built for; they are
    checked against the data."""

    def __init__(
        self,
        source: CaptionSource,
        zero_shot: TorchvisionImages | None = None,
        templates: list[str] | None = None,
        root: str = "data",
        download: bool = False,
        tokenizer: TokenizerKind = "bpe",
        vocab_size: int = 384,
        max_length: Annotated[int, Positive] = 40,
        batch_size: Annotated[int, Positive] = 128,
        eval_batch_size: Annotated[int, Positive] = 500,
        zero_shot_val: Annotated[int, Positive] = 1000,
        zero_shot_test: Annotated[int, Positive] | None = None,
        zero_shot_side: Annotated[int, Positive] = 32,
        probe_train: Annotated[int, Positive] = 5000,
        num_classes: Annotated[int, Positive] | None = None,
        image_size: Annotated[int, Positive] = 64,
    ):
        super().__init__()
        self.source = source
        self.zero_shot = zero_shot
        self.templates = list(templates or [])
        self.root = Path(root)
        self.download = download
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.zero_shot_counts = {"val": zero_shot_val, "test": zero_shot_test, "probe": probe_train}
        self.zero_shot_side = zero_shot_side
        self.num_classes = num_classes
        self.image_size = image_size
        self.tokenizer: Tokenizer | None = None
        self.splits: dict[str, TensorBatches] = {}
        self.zero_shot_splits: dict[str, TensorBatches] = {}
        self.prompt_tokens: torch.Tensor | None = None  # (classes, templates, max_length)
        self.categories = list(source.nouns)

    def prepare_data(self) -> None:
        self.source.prepare(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.zero_shot is not None and len(self.categories) != self.num_classes:
            raise DataError(f"data.num_classes is {self.num_classes} but {self.source.name} has {len(self.categories)}")
        pairs = {split: self.source.split(self.root, split) for split in SPLITS}
        if self.tokenizer is None:
            self._use_tokenizer(train_tokenizer(self.tokenizer_kind, pairs["train"].captions, self.vocab_size))
        for split, (paths, captions) in pairs.items():
            self.splits[split] = ScaledImages(self._read_images(paths), self._encode(captions))
        if self.zero_shot is None:
            return
        self.prompt_tokens = self._encode([t.format(noun) for noun in self.categories for t in self.templates]).view(
            len(self.categories), len(self.templates), -1
        )
        train_part, test_part = self.zero_shot.load(self.root, self.download)
        last_val = len(train_part.labels) - self.zero_shot_counts["val"]
        parts = {
            "val": (train_part, slice(last_val, None)),
            "test": (test_part, slice(self.zero_shot_counts["test"])),
            "probe": (train_part, slice(self.zero_shot_counts["probe"])),
        }
        for split, (part, rows) in parts.items():
            images = torch.from_numpy(np.asarray(part.images[rows]))
            self.zero_shot_splits[split] = ScaledImages(self._on_canvas(images), part.labels[rows])

    def zero_shot_loader(self, split: str) -> DataLoader:
        """This process's share of the zero-shot images of `split` (val, test, probe), in order."""
        rank, world_size = rank_and_world_size(self.trainer)
        batch_size = per_process(self.eval_batch_size, world_size, "data.eval_batch_size")
        return batch_loader(self.zero_shot_splits[split], batch_size, False, rank, world_size)

    def _read_images(self, paths: list[Path]) -> torch.Tensor:
        from PIL import Image

        images = np.empty((len(paths), self.image_size, self.image_size, 3), dtype=np.uint8)
        for row, path in zip(images, paths):
            with reading(path):
                image = Image.open(path).convert("RGB")
            if image.size != (self.image_size, self.image_size):  # photos (COCO, Flickr30k): the centre square
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                box = (left, top, left + side, top + side)
                image = image.resize((self.image_size, self.image_size), Image.BICUBIC, box=box)
            row[:] = np.asarray(image)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def _on_canvas(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) uint8 grey images scaled to `zero_shot_side` and centred on black canvases (N, 3, S, S)."""
        side, size = self.zero_shot_side, self.image_size
        scaled = F.interpolate(images.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        start = (size - side) // 2
        canvas = torch.zeros(len(images), 1, size, size)
        canvas[:, :, start : start + side, start : start + side] = scaled
        return canvas.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()

    def _use_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Setup and checkpoint restore both bring a tokenizer; they must agree, whichever comes first."""
        if tokenizer.vocab_size > self.vocab_size:
            raise DataError(f"the tokenizer has {tokenizer.vocab_size} ids but data.vocab_size is {self.vocab_size}")
        if self.tokenizer is not None and tokenizer != self.tokenizer:
            raise DataError("the data's tokenizer differs from the checkpoint's: the token ids would not fit the model")
        self.tokenizer = tokenizer

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """cls + the first max_length - 1 tokens of each text, padded to max_length (the same width in every
        split and process, so that batches gather across processes)."""
        tokens = torch.full((len(texts), self.max_length), Tokenizer.pad_id, dtype=torch.int64)
        for row, ids in zip(tokens, self.tokenizer.encode_batch(texts)):
            kept = [Tokenizer.cls_id, *ids[: self.max_length - 1]]
            row[: len(kept)] = torch.tensor(kept)
        return tokens

    def state_dict(self) -> dict[str, str]:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self._use_tokenizer(tokenizer_from_json(state_dict["tokenizer"]))

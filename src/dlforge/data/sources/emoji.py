"""Emoji with their human-written names: the colour emoji of Debian's fonts-noto-color-emoji rendered with Pillow,
each captioned with its Unicode CLDR short name from unicode-data's emoji-test.txt ("grinning face with big
eyes", "flag: Wales"): the fully-qualified emoji without skin-tone variants, about 1,900. A fixed `val` and
`test` share of the emoji (drawn from `seed`) is held out, so retrieval is asked of emoji never trained on.
Written into `root/emoji-captions/` in COCO Captions' layout, as `dlforge.data.sources.captions` reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import numpy as np

from dlforge.constraints import Fraction
from dlforge.data.files import made_with, prepare_once, reading, staged_dir
from dlforge.data.sources.captions import CaptionedImages, read_caption_file
from dlforge.errors import DataError

SIZE = 64
FONT_SIZE = 109  # NotoColorEmoji is a bitmap font: 109 is the one size it has
SKIN_TONES = range(0x1F3FB, 0x1F400)
LINE = re.compile(r"^([0-9A-F ]+?)\s*; fully-qualified\s*# (\S+) E\d+\.\d+ (.+)$")
VERSION = 1


def emoji_names(listing: Path) -> list[tuple[str, str]]:
    """(emoji, CLDR name) of every fully-qualified emoji of emoji-test.txt without a skin-tone modifier."""
    if not listing.is_file():
        raise DataError(f"{listing} not found: `apt-get install unicode-data` installs it (Debian)")
    rows = []
    with reading(listing):
        for line in listing.read_text(encoding="utf-8").splitlines():
            match = LINE.match(line)
            if match and not any(int(code, 16) in SKIN_TONES for code in match.group(1).split()):
                rows.append((match.group(2), match.group(3)))
    return rows


class EmojiCaptions:
    name = "emoji_captions"
    # Rendered from Debian's fonts-noto-color-emoji and unicode-data, not from Python packages: not in data.dvc or
    # `all=true` (a clone rebuilds data.dvc's file list from what Python packages make).
    needs_download = True

    def __init__(
        self,
        font: str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
        names: str = "/usr/share/unicode/emoji/emoji-test.txt",
        val: Annotated[float, Fraction] = 0.1,
        test: Annotated[float, Fraction] = 0.1,
        seed: int = 0,
    ):
        self.font, self.names = Path(font), Path(names)
        self.fractions = {"val": val, "test": test}
        self.seed = seed
        self.nouns: list[str] = []  # no classes: retrieval only

    def directory(self, root: Path) -> Path:
        return Path(root) / "emoji-captions"

    def settings(self) -> dict:
        return {"version": VERSION, "seed": self.seed, "fractions": self.fractions, "size": SIZE}

    def prepare(self, root: Path, download: bool) -> None:
        directory = self.directory(root)
        prepare_once(directory, lambda: made_with(directory, self.settings()), lambda: self._write(directory))

    def split(self, root: Path, split: str) -> CaptionedImages:
        directory = self.directory(root)
        if not made_with(directory, self.settings()):
            raise DataError(
                f"{directory} holds no emoji made with data.source's settings: "
                "`python src/prepare.py data=emoji_captions` makes them"
            )
        return read_caption_file(directory / "annotations" / f"captions_{split}.json", directory / "images" / split)

    def _write(self, directory: Path) -> None:
        from PIL import Image, ImageDraw, ImageFont

        if not self.font.is_file():
            raise DataError(f"{self.font} not found: `apt-get install fonts-noto-color-emoji` installs it (Debian)")
        rows = emoji_names(self.names)
        order = np.random.default_rng(self.seed).permutation(len(rows))
        counts = {split: round(fraction * len(rows)) for split, fraction in self.fractions.items()}
        parts = {"test": order[: counts["test"]], "val": order[counts["test"] : counts["test"] + counts["val"]]}
        parts["train"] = order[counts["test"] + counts["val"] :]
        font = ImageFont.truetype(str(self.font), FONT_SIZE)
        with staged_dir(directory) as staged:
            (staged / "annotations").mkdir()
            for split, indices in parts.items():
                (staged / "images" / split).mkdir(parents=True)
                images, annotations = [], []
                for image_id, index in enumerate(sorted(indices.tolist()), start=1):
                    emoji, name = rows[index]
                    glyph = Image.new("RGBA", (2 * FONT_SIZE, 2 * FONT_SIZE), (255, 255, 255, 0))
                    ImageDraw.Draw(glyph).text((0, 0), emoji, font=font, embedded_color=True)
                    glyph = glyph.crop(glyph.getbbox() or (0, 0, FONT_SIZE, FONT_SIZE))
                    side = max(glyph.size)  # centred on a white square, then scaled down
                    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
                    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
                    file_name = f"{image_id:06d}.png"
                    square.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS).save(
                        staged / "images" / split / file_name
                    )
                    images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE})
                    annotations.append({"id": image_id, "image_id": image_id, "caption": name, "emoji": emoji})
                coco = {"images": images, "annotations": annotations}
                (staged / "annotations" / f"captions_{split}.json").write_text(json.dumps(coco, ensure_ascii=False))
            (staged / "meta.json").write_text(json.dumps({"settings": self.settings()}, indent=2))

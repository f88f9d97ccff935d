"""CLIP on a few captioned scenes: the symmetric InfoNCE and its temperature, retrieval recall against a count by
hand, eval reproducing the run's test metrics, the pictures, negatives gathered from both DDP ranks, and the
captioned scenes themselves (held-out compositions, one-line errors)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import SCENE_CAPTION_TEST_BATCHES, assert_ok, compose, job_config, read_metrics, run_dirs, run_script
from dlforge.data.sources.captions import COLOUR_NAMES, HELD_OUT, NOUNS, CaptionedScenes, read_caption_file
from dlforge.data.sources.images import TorchvisionImages
from dlforge.errors import DataError
from dlforge.nets.multimodal.clip import CLIP
from dlforge.nets.text.encoder import TransformerEncoder
from dlforge.nets.vision.vit import ViT
from dlforge.objectives.contrastive import Contrastive, PairRetrieval

# A narrow CLIP on the few scenes of the registry's capped runs.
SMALL = [
    "experiment=scenes_clip",
    *SCENE_CAPTION_TEST_BATCHES,
    "model.net.image_tower.channels=[8,8,16,16]",
    "model.net.text_tower.dim=32",
    "model.net.embed_dim=16",
    "logger=none",
]
FASHION_MNIST = TorchvisionImages("fashion_mnist", package_dir="/usr/share/datasets/fashion-mnist")


def tiny_clip() -> Contrastive:
    image_tower = ViT(image_size=16, patch_size=8, dim=16, depth=1, heads=2)
    return Contrastive(
        CLIP(image_tower, TransformerEncoder(vocab_size=20, max_length=8, dim=16, depth=1, heads=2), 8), 10
    )


def test_loss_is_symmetric_infonce_at_a_learned_temperature_clamped_at_100():
    torch.manual_seed(0)
    model = tiny_clip()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    images, tokens = torch.rand(6, 3, 16, 16), torch.randint(5, 20, (6, 8))
    loss = model.training_step((images, tokens), 0)
    image_embeddings, text_embeddings = (F.normalize(e, dim=-1) for e in model.net(images, tokens))
    logits = image_embeddings @ text_embeddings.T / 0.07
    per_image = -logits.log_softmax(1).diag().mean()
    per_text = -logits.log_softmax(0).diag().mean()
    torch.testing.assert_close(loss, (per_image + per_text) / 2)
    loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0  # the temperature learns
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000))
    assert model.scale().item() == pytest.approx(100)


def test_retrieval_recall_is_a_count_by_hand():
    """Recall@k both ways, a caption whose text repeats another's counting as found for either's image."""
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(12, 4), dim=-1), F.normalize(torch.randn(12, 4), dim=-1)
    tokens = torch.randint(0, 4, (12, 1))  # a vocabulary of 4 one-token captions: many repeat
    metric = PairRetrieval()
    metric.update(images[:5], texts[:5], tokens[:5])
    metric.update(images[5:], texts[5:], tokens[5:])
    scores = metric.compute()
    same = tokens == tokens.T
    similarity = images @ texts.T
    for direction, matrix in (("i2t", similarity), ("t2i", similarity.T)):
        for k in (1, 5):
            top = matrix.topk(k, dim=1).indices
            found = [bool(same[query, top[query]].any()) for query in range(12)]
            assert scores[f"{direction}_r{k}"].item() == pytest.approx(sum(found) / 12), (direction, k)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> Path:
    """A short run of a narrow CLIP on the few scenes (8 steps), trained and tested in this process."""
    from dlforge.tasks.train import train

    log_dir = tmp_path_factory.mktemp("clip")
    train(job_config(compose("train", [*SMALL, "trainer.max_epochs=2", f"paths.log_dir={log_dir}"], log_dir / "run")))
    return log_dir / "run"


def test_eval_reproduces_train_time_metrics_and_shows_pictures(clip_run: Path, tmp_path: Path):
    from dlforge.tasks.evaluate import evaluate

    trained = read_metrics(clip_run)
    names = [f"test/{name}" for name in ("zero_shot_acc", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "loss")]
    assert all(trained[name] >= 0 for name in names) and 0 < trained["test/zero_shot_acc"] <= 1
    checkpoint = clip_run / "checkpoints" / "best.ckpt"
    evaluated = evaluate(job_config(compose("eval", [f"ckpt_path={checkpoint}", "logger=none"], tmp_path)))
    for name in names:
        assert evaluated[name] == trained[name], name
    matrix = torch.tensor(trained["test/zero_shot_confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 16  # the 16 zero-shot test images
    for name in ("retrieval.png", "zero_shot_confusion_matrix.png"):
        with Image.open(clip_run / "media" / "test" / name) as picture:
            picture.verify()


def test_ddp_run_gathers_negatives_from_both_ranks(tmp_path: Path):
    """Two processes, 2 steps (fast_dev_run logs nothing): the logits matrix is the global batch's."""
    capped = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "trainer=ddp", "logger=csv"]
    assert_ok(run_script("train", *SMALL[:-1], *capped, log_dir=tmp_path))
    (run_dir,) = run_dirs(tmp_path)
    logged = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert [float(row["train/batch_pairs"]) for row in logged if row["train/batch_pairs"]] == [8.0]  # 4 a process
    assert math.isfinite(read_metrics(run_dir)["test/zero_shot_acc"])
    assert (run_dir / "train_ddp_process_1.log").exists()


@pytest.fixture(scope="module")
def few_scenes(tmp_path_factory) -> tuple[CaptionedScenes, Path]:
    root = tmp_path_factory.mktemp("data")  # Fashion-MNIST extracted into it from Debian's package
    source = CaptionedScenes(FASHION_MNIST, train=24, val=8, test=16)
    source.prepare(root, download=False)
    return source, root


def test_test_scenes_alone_hold_the_held_out_compositions(few_scenes):
    source, root = few_scenes
    directory = source.directory(root)
    for split in ("train", "val", "test"):
        coco = json.loads((directory / "annotations" / f"captions_{split}.json").read_text())
        for annotation in coco["annotations"]:
            objects = annotation["objects"]
            assert 1 <= len(objects) <= 2
            pairs = {(item["category"], COLOUR_NAMES.index(item["colour"])) for item in objects}
            assert bool(pairs & HELD_OUT) == (split == "test"), annotation
            for item in objects:  # the caption names every object's class (in the plural for two of one class)
                assert any(noun in annotation["caption"] for noun in NOUNS[item["category"]])
                if split != "train":  # and, but in training captions, each of its attributes
                    assert all(item[key] in annotation["caption"] for key in ("colour", "size", "position"))
        paths, captions = source.split(root, split)
        assert len(paths) == len(captions) == len(coco["images"])


def test_scenes_are_made_the_same_from_the_same_seed(few_scenes, tmp_path: Path):
    source, root = few_scenes
    source.prepare(tmp_path, download=False)
    for split in ("train", "test"):
        name = f"annotations/captions_{split}.json"
        assert (source.directory(tmp_path) / name).read_bytes() == (source.directory(root) / name).read_bytes()
    first = "images/test/000001.png"
    assert (source.directory(tmp_path) / first).read_bytes() == (source.directory(root) / first).read_bytes()


def test_detail_sets_how_often_training_captions_name_what_besides_the_class_they_see(few_scenes, tmp_path: Path):
    source, root = few_scenes
    plain = CaptionedScenes(FASHION_MNIST, train=24, val=8, test=16, detail=0.0)
    plain.prepare(tmp_path, download=False)
    assert plain.directory(tmp_path).name == "scenes-captions-train24-val8-test16-detail0"
    for split in ("train", "test"):
        made = [
            json.loads((scenes.directory(where) / "annotations" / f"captions_{split}.json").read_text())
            for scenes, where in ((source, root), (plain, tmp_path))
        ]
        assert made[0]["images"] == made[1]["images"]  # the same scenes
        first = f"images/{split}/000001.png"
        assert (source.directory(root) / first).read_bytes() == (plain.directory(tmp_path) / first).read_bytes()
        for annotation, bare in zip(made[0]["annotations"], made[1]["annotations"]):
            assert bare["objects"] == annotation["objects"]
            attributes = [item[key] for item in bare["objects"] for key in ("colour", "size", "position")]
            if split == "train":  # the class alone
                assert not any(attribute in bare["caption"] for attribute in attributes), bare
            else:  # retrieval asks for every attribute
                assert bare["caption"] == annotation["caption"]
    default_train = json.loads((source.directory(root) / "annotations" / "captions_train.json").read_text())
    named = [  # at the default, some attributes and not others
        item[key] in annotation["caption"]
        for annotation in default_train["annotations"]
        for item in annotation["objects"]
        for key in ("colour", "size")
    ]
    assert 0 < sum(named) < len(named)


def test_a_caption_naming_a_missing_image_stops_with_one_line_naming_it(few_scenes, tmp_path: Path):
    source, root = few_scenes
    copy = tmp_path / "captions"
    shutil.copytree(source.directory(root), copy)
    (copy / "images" / "val" / "000003.png").unlink()
    listing = copy / "annotations" / "captions_val.json"
    with pytest.raises(DataError) as raised:
        read_caption_file(listing, copy / "images" / "val")
    message = str(raised.value)
    assert message == f"{listing}: caption 3 names image {copy / 'images' / 'val' / '000003.png'}, which does not exist"


def test_emoji_are_named_without_skin_tones_and_rendered_in_colour(tmp_path: Path):
    from dlforge.data.sources.emoji import EmojiCaptions, emoji_names

    names = emoji_names(Path("/usr/share/unicode/emoji/emoji-test.txt"))
    assert 1800 <= len(names) <= 2000 and ("😀", "grinning face") in names
    assert not any(0x1F3FB <= ord(char) <= 0x1F3FF for emoji, _ in names for char in emoji)
    listing = tmp_path / "emoji-test.txt"  # a few lines of the real file, one a skin-tone variant
    listing.write_text(
        "1F600 ; fully-qualified # 😀 E1.0 grinning face\n"
        "1F44B 1F3FB ; fully-qualified # 👋🏻 E1.0 waving hand: light skin tone\n"
        "263A FE0F ; fully-qualified # ☺️ E0.6 smiling face\n"
        "263A ; unqualified # ☺ E0.6 smiling face\n"
        + "".join(f"{0x1F680 + n:X} ; fully-qualified # {chr(0x1F680 + n)} E0.6 vehicle {n}\n" for n in range(8)),
        encoding="utf-8",
    )
    source = EmojiCaptions(names=str(listing), val=0.2, test=0.2)
    source.prepare(tmp_path, download=False)
    splits = {split: source.split(tmp_path, split) for split in ("train", "val", "test")}
    assert sorted(caption for split in splits.values() for caption in split.captions) == sorted(
        ["grinning face", "smiling face", *(f"vehicle {n}" for n in range(8))]
    )
    assert [len(split.captions) for split in splits.values()] == [6, 2, 2]
    with Image.open(splits["train"].paths[0]) as image:
        assert image.size == (64, 64) and any(len({*pixel}) > 1 for pixel in image.getdata())  # in colour


def _photos(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True)
    for number, name in enumerate(names):
        Image.new("RGB", (40 + 10 * number, 30), (20 * number, 100, 200)).save(directory / name)  # not square


@pytest.mark.parametrize("layout", ["coco", "flickr30k"])
def test_coco_and_flickr30k_layouts_read_as_torchvision_reads_them(layout, tmp_path: Path):
    from dlforge.data.captions import CaptionsData
    from dlforge.data.sources.captions import CocoCaptions, Flickr30kCaptions

    if layout == "coco":
        for part, count in (("train", 3), ("val", 3)):
            names = [f"{part}_{n}.jpg" for n in range(count)]
            _photos(tmp_path / "coco" / f"{part}2017", names)
            images = [{"id": n + 1, "file_name": name} for n, name in enumerate(names)]
            annotations = [
                {"id": 10 * n + k, "image_id": n + 1, "caption": f"{part} photo {n} caption {k}"}
                for n in range(count)
                for k in range(2)
            ]
            (tmp_path / "coco" / "annotations").mkdir(exist_ok=True)
            listing = tmp_path / "coco" / "annotations" / f"captions_{part}2017.json"
            listing.write_text(json.dumps({"images": images, "annotations": annotations}))
        source, counts = CocoCaptions(test=1), {"train": 6, "val": 4, "test": 2}
        missing = (tmp_path / "coco" / "val2017" / "val_2.jpg", f"{listing}: caption 20 names image ")
    else:
        names = [f"{n}.jpg" for n in range(6)]
        _photos(tmp_path / "flickr30k" / "flickr30k-images", names)
        listing = tmp_path / "flickr30k" / "results_20130124.token"
        listing.write_text("".join(f"{name}#{k}\tphoto {name} caption {k}\n" for name in names for k in range(2)))
        source, counts = Flickr30kCaptions(val=1, test=2), {"train": 6, "val": 2, "test": 4}
        missing = (tmp_path / "flickr30k" / "flickr30k-images" / "5.jpg", f"{listing}: caption 5.jpg#0 names image ")
    data = CaptionsData(source, root=str(tmp_path), vocab_size=300, batch_size=2, eval_batch_size=2)
    data.setup("fit")
    assert {split: len(pairs) for split, pairs in data.splits.items()} == counts
    images, tokens = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32 and tokens.shape == (2, 40)
    missing[0].unlink()
    with pytest.raises(DataError, match=f"^{missing[1]}"):
        source.split(tmp_path, "test")

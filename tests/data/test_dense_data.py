"""Detection and segmentation data: Fashion-MNIST from Debian's package, the scenes made of it (COCO and
VOC-style files), the batches DetectionData and SegmentationData serve, their augmentation, and the COCO,
Pascal VOC and Cityscapes readers on small files written here in those datasets' own layouts."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlforge.data.dense import DetectionData, ObjectCropData, SegmentationData
from dlforge.data.sources.dense import Cityscapes, Coco, PascalVOC
from dlforge.data.sources.images import TorchvisionImages
from dlforge.data.sources.scenes import Scenes, voc_palette
from dlforge.errors import DataError

PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (.ci/run installs it)
COUNTS = {"train": 24, "val": 8, "test": 8}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def fashion_mnist(package_dir: Path = PACKAGE_DIR) -> TorchvisionImages:
    return TorchvisionImages("fashion_mnist", package_dir=str(package_dir))


def scenes(seed: int = 0) -> Scenes:
    return Scenes(fashion_mnist(), **COUNTS, seed=seed)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A data dir holding Fashion-MNIST (from the package) and a few scenes."""
    if not PACKAGE_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("data")
    scenes().prepare(root, download=False)
    return root


def tight_box(mask: torch.Tensor) -> list[float]:
    rows, cols = mask.nonzero(as_tuple=True)
    return [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]


def file_hashes(directory: Path) -> dict[str, str]:
    return {
        path.relative_to(directory).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# --- Fashion-MNIST from the Debian package -------------------------------------------------------------


def test_fashion_mnist_trains_offline_from_the_package_files(root):
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from dlforge.config.build import build_datamodule

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=fashion_mnist", f"paths.data_dir={root}"])
    data = build_datamodule(cfg)
    data.prepare_data()
    data.setup("fit")
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 54000, "val": 6000, "test": 10000}
    assert data.splits["test"].tensors[1][:8].tolist() == [9, 2, 1, 1, 6, 1, 4, 6]  # Fashion-MNIST's test labels
    assert sorted(path.name for path in (root / "FashionMNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]  # extracted into the data dir, which DVC versions


def test_fashion_mnist_nowhere_names_the_package_and_the_download(tmp_path):
    with pytest.raises(DataError) as error:
        fashion_mnist(tmp_path / "no-package").load(tmp_path / "data", download=False)
    message = str(error.value)
    assert "\n" not in message
    assert f"fashion_mnist not found or corrupted under {tmp_path / 'data'} nor in {tmp_path / 'no-package'}" in message
    assert "`apt-get install dataset-fashion-mnist`" in message and "data.download=true" in message


@pytest.mark.parametrize(
    "option,datamodule,num_classes",
    [
        ("scenes", DetectionData, 10),
        ("scenes_semantic", SegmentationData, 11),
        ("scenes_objects", ObjectCropData, 10),
        ("coco", DetectionData, 80),
        ("voc_detection", DetectionData, 20),
        ("voc_segmentation", SegmentationData, 21),
        ("cityscapes", SegmentationData, 19),
    ],
)
def test_dense_data_options_build_their_datamodules(option, datamodule, num_classes, tmp_path):
    """Their keys fit the signatures (tests/config/test_configs.py checks them with a model that reads them)."""
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from dlforge.config.build import build_datamodule

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={option}", f"paths.data_dir={tmp_path}"])
    data = build_datamodule(cfg)
    assert type(data) is datamodule and data.num_classes == num_classes
    assert data.source.needs_download  # none is among the datasets `prepare.py all=true` makes (data.dvc)


# --- the scenes' files ---------------------------------------------------------------------------------


def test_scene_files_are_coco_and_voc_files_that_agree(root):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    directory = root / "scenes-train24-val8-test8"
    band_pixels = 0
    for split, count in COUNTS.items():
        coco = COCO(str(directory / "annotations" / f"instances_{split}.json"))
        assert sorted(coco.imgs) == list(range(1, count + 1))
        assert [coco.cats[k]["name"] for k in sorted(coco.cats)] == CLASSES and sorted(coco.cats) == list(range(1, 11))
        for image_id, info in coco.imgs.items():
            image = Image.open(directory / "images" / split / info["file_name"])
            assert (image.mode, image.size) == ("RGB", (128, 128))
            label_map = Image.open(directory / "labels" / split / info["file_name"])
            assert label_map.mode == "P" and label_map.getpalette()[:30] == voc_palette()[:30]
            classes = torch.from_numpy(np.array(label_map)).long()
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert 1 <= len(annotations) <= 5
            assert set(classes.unique().tolist()) <= {0, *range(1, 11), 255}
            band_pixels += (classes == 255).sum().item()
            covered = torch.zeros(128, 128, dtype=torch.bool)
            for annotation in annotations:
                mask = torch.from_numpy(coco_mask.decode(annotation["segmentation"])).bool()
                x, y, w, h = annotation["bbox"]
                assert tight_box(mask) == [x, y, x + w, y + h] and annotation["area"] == mask.sum().item()
                assert 10 <= max(w, h) <= 64  # objects scaled to 20-64 px, less their margins and what covers them
                assert not (mask & covered).any()  # visible masks: occluded pixels belong to the object on top
                covered |= mask
                # the class map agrees with the mask, but for the void band along outlines
                assert set(classes[mask].unique().tolist()) <= {annotation["category_id"], 255}
                assert (classes[mask] == annotation["category_id"]).float().mean() > 0.5
            assert ((classes == 0) == (~covered & (classes != 255))).all()
    assert band_pixels > 0


def test_scene_splits_take_disjoint_objects_and_repeat_from_their_seed(root, tmp_path):
    directory = root / "scenes-train24-val8-test8"
    sources = {}
    for split in COUNTS:
        annotations = json.loads((directory / "annotations" / f"instances_{split}.json").read_text())["annotations"]
        sources[split] = {(a["fashion_mnist"]["split"], a["fashion_mnist"]["index"]) for a in annotations}
    assert all(source == "train" and index < 54000 for source, index in sources["train"])
    assert all(source == "train" and index >= 54000 for source, index in sources["val"])
    assert all(source == "test" for source, _ in sources["test"])

    shutil.copytree(root / "FashionMNIST", tmp_path / "FashionMNIST")
    scenes().prepare(tmp_path, download=False)
    assert file_hashes(tmp_path / directory.name) == file_hashes(directory)
    scenes(seed=1).prepare(tmp_path, download=False)
    other = file_hashes(tmp_path / f"{directory.name}-seed1")
    assert other.keys() == file_hashes(directory).keys()
    assert sum(other[path] != md5 for path, md5 in file_hashes(directory).items()) > len(other) - 2  # meta.json


# --- batches -------------------------------------------------------------------------------------------


def detection_data(root: Path, **options) -> DetectionData:
    data = DetectionData(scenes(), root=str(root), batch_size=8, eval_batch_size=8, num_workers=0, **options)
    data.setup("fit")
    return data


def semantic_data(root: Path, **options) -> SegmentationData:
    data = SegmentationData(scenes(), root=str(root), batch_size=8, eval_batch_size=8, num_workers=0, **options)
    data.setup("fit")
    return data


def test_detection_batches_hold_the_contracts_targets(root):
    data = detection_data(root)
    assert data.categories == CLASSES
    images, targets = next(iter(data.val_dataloader()))
    assert images.shape == (8, 3, 128, 128) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
    assert len(targets) == 8
    for target in targets:
        n = len(target["labels"])
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and target["labels"].min() >= 1 and target["labels"].max() <= 10
        assert target["masks"].shape == (n, 128, 128) and target["masks"].dtype == torch.uint8
        assert target["masks"].max() == 1 and target["iscrowd"].tolist() == [0] * n
        assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
        assert [tight_box(mask) for mask in target["masks"]] == target["boxes"].tolist()
    assert [int(target["image_id"]) for target in targets] == list(range(1, 9))

    _, box_only = next(iter(detection_data(root, masks=False).val_dataloader()))
    assert "masks" not in box_only[0] and torch.equal(box_only[0]["boxes"], targets[0]["boxes"])
    with pytest.raises(DataError, match="data.num_classes is 80 but scenes has 10"):
        detection_data(root, num_classes=80)


def test_semantic_batches_hold_class_ids_and_the_void_band(root):
    data = semantic_data(root)
    assert data.categories == ["background", *CLASSES]
    images, masks = next(iter(data.val_dataloader()))
    assert images.shape == (8, 3, 128, 128) and images.dtype == torch.float32
    assert masks.shape == (8, 128, 128) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= {*range(11), 255} and (masks == 255).any() and (masks == 0).any()


def test_object_crops_hold_each_object_at_its_scale(root):
    crops_data = ObjectCropData(scenes(), root=str(root), crop_size=48, batch_size=4, eval_batch_size=4, num_workers=0)
    crops_data.setup("fit")
    crops, labels = next(iter(crops_data.val_dataloader()))
    images, targets = next(iter(detection_data(root).val_dataloader()))
    assert torch.equal(labels, torch.cat([target["labels"] for target in targets[:4]]) - 1)
    assert crops.shape == (len(labels), 3, 48, 48) and crops.dtype == torch.float32
    crop = iter(crops)
    for image, target in zip(images[:4], targets[:4]):
        for box, mask in zip(target["boxes"].tolist(), target["masks"]):
            found = next(crop)
            if max(box[2] - box[0], box[3] - box[1]) > 48:  # scaled down to fit: its whole box in view
                continue
            windows = image.unfold(1, 48, 1).unfold(2, 48, 1)  # (3, top, left, 48, 48)
            top, left = (windows == found[:, None, None]).all(-1).all(-1).all(0).nonzero()[0].tolist()
            assert left <= box[0] and box[2] <= left + 48 and top <= box[1] and box[3] <= top + 48
            assert mask[top : top + 48, left : left + 48].sum() == mask.sum()  # all of the object's pixels
    with pytest.raises(StopIteration):
        next(crop)
    train_crops, train_labels = next(iter(crops_data.train_dataloader()))  # augmented: still one crop per label
    assert len(train_crops) == len(train_labels) > 0 and train_labels.min() >= 0 and train_labels.max() <= 9


def test_augmentation_moves_boxes_masks_and_class_maps_with_the_image(root):
    detection, semantic = detection_data(root), semantic_data(root)
    moved = 0
    for index in range(8):
        plain_image, _ = detection.splits["train"][index]
        for seed in (1, 2, 3):
            image, target = detection.splits["train"][(index, seed)]
            same_image, classes = semantic.splits["train"][(index, seed)]
            assert torch.equal(image, same_image)  # one seed, one transform, whichever the target
            again, again_target = detection.splits["train"][(index, seed)]
            assert torch.equal(image, again) and torch.equal(target["boxes"], again_target["boxes"])
            moved += not torch.equal(image, plain_image)
            for box, mask, label in zip(target["boxes"], target["masks"], target["labels"]):
                assert mask.any()
                assert torch.allclose(torch.tensor(tight_box(mask), dtype=torch.float32), box, atol=1)
                assert set(classes[mask.bool()].unique().tolist()) <= {int(label), 255}
            objects = torch.zeros_like(classes, dtype=torch.bool)
            for mask in target["masks"]:
                objects |= mask.bool()
            assert not ((classes != 0) & (classes != 255) & ~objects).any()  # no class where no object is
    assert moved >= 20  # of 24 draws: flips, shifts and scales change (nearly) every image


def test_training_batches_are_the_same_in_loader_workers_and_when_resumed(root):
    def first_batches(num_workers: int, state: dict | None = None, count: int = 2):
        data = detection_data(root)
        data.num_workers = num_workers
        torch.manual_seed(7)  # the run's seed: the shuffle and the augmentation follow from it
        loader = data.train_dataloader()
        if state:
            loader.load_state_dict(state)
        batches = []
        for images, targets in loader:
            batches.append((images, [target["boxes"] for target in targets]))
            if len(batches) == count:
                break
        return batches

    in_process, in_worker = first_batches(0), first_batches(1)
    resumed = first_batches(0, {"epoch": 0, "position": 8}, count=1)
    for (images, boxes), (other_images, other_boxes) in ((in_process[0], in_worker[0]), (in_process[1], resumed[0])):
        assert torch.equal(images, other_images)
        assert all(torch.equal(a, b) for a, b in zip(boxes, other_boxes))


# --- the public datasets' layouts ----------------------------------------------------------------------


def write_image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_label_map(path: Path, ids: np.ndarray, palette: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        image.putpalette(voc_palette())
    image.save(path)


def write_coco(root: Path, **changes) -> Path:
    """COCO's layout with two val2017 images of different sizes and categories of ids 1, 18 and 90."""
    images = [
        {"id": 3, "file_name": "000000000003.jpg", "width": 64, "height": 48},
        {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 56},
        {"id": 9, "file_name": "000000000009.jpg", "width": 32, "height": 24},  # no objects
    ]
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]  # a polygon: the pixels of x, y in [10, 30)
    annotations = [
        {"id": 1, "image_id": 3, "category_id": 18, "bbox": [10, 10, 20, 20], "segmentation": square, "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 90, "bbox": [40, 5, 20, 30], "segmentation": square, "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 56], "segmentation": square, "iscrowd": 0},
    ]
    for key, value in changes.items():
        annotations[0][key] = value
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]
    for split in ("train2017", "val2017"):
        for image in images:
            write_image(root / split / image["file_name"], image["width"], image["height"])
        annotation_file = root / "annotations" / f"instances_{split}.json"
        annotation_file.parent.mkdir(parents=True, exist_ok=True)
        annotation_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root / "annotations" / "instances_train2017.json"  # the first read


def test_coco_layout_maps_categories_and_pads_batches(tmp_path):
    write_coco(tmp_path)
    data = DetectionData(Coco(), root=str(tmp_path), batch_size=2, eval_batch_size=2, num_workers=0, num_classes=3)
    data.setup("fit")
    assert data.categories == ["person", "dog", "toothbrush"]
    images, (first, second) = next(iter(data.test_dataloader()))
    assert images.shape == (2, 3, 56, 64)  # padded bottom and right to the batch's largest
    assert images[0, :, 48:].abs().sum() == 0 and images[1, :, :, 40:].abs().sum() == 0
    assert first["labels"].tolist() == [2, 3] and second["labels"].tolist() == [1]  # ids 18, 90, 1 -> 2, 3, 1
    assert first["boxes"].tolist() == [[10, 10, 30, 30], [40, 5, 60, 35]]
    assert first["iscrowd"].tolist() == [0, 1] and int(first["image_id"]) == 3 and int(second["image_id"]) == 7
    assert first["masks"].shape == (2, 56, 64) and second["masks"].shape == (1, 56, 64)
    assert tight_box(first["masks"][0]) == [10, 10, 30, 30] and not first["masks"][:, 48:].any()
    images, (empty,) = list(data.test_dataloader())[1]
    assert images.shape == (1, 3, 24, 32) and int(empty["image_id"]) == 9
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, 24, 32)

    with pytest.raises(DataError, match=r"instances_train2017.json not found \(COCO's layout: annotations/"):
        Coco().detection_split(tmp_path / "elsewhere", "train", masks=True)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"bbox": [50, 10, 20, 20]}, r"annotation 1 \(image 3\): box \[50, 10, 20, 20\] .*outside the 64x48 image"),
        ({"category_id": 17}, r"annotation 1 \(image 3\): unknown category id 17 \(the file's: 1, 18, 90\)"),
        ({"image_id": 4}, r"annotation 1 \(image 4\): no image of that id"),
        ({"bbox": None}, r"annotation 1 \(image 3\): not a COCO instances entry"),
    ],
    ids=["box-outside", "unknown-category", "unknown-image", "no-box"],
)
def test_inconsistent_coco_annotations_stop_with_the_file_and_the_entry(tmp_path, changes, message):
    annotation_file = write_coco(tmp_path, **changes)
    data = DetectionData(Coco(), root=str(tmp_path), num_workers=0, num_classes=3)
    with pytest.raises(DataError, match=f"^{annotation_file}: {message}") as error:
        data.setup("fit")
    assert "\n" not in str(error.value)


def test_missing_coco_images_and_malformed_json_stop_with_the_file(tmp_path):
    annotation_file = write_coco(tmp_path)
    (tmp_path / "train2017" / "000000000007.jpg").unlink()
    with pytest.raises(
        DataError, match=r"instances_train2017.json: 1 images not found: image 7 \(.*000000000007.jpg\)"
    ):
        DetectionData(Coco(), root=str(tmp_path), num_workers=0, num_classes=3).setup("fit")
    annotation_file.write_text('{"images": [')
    with pytest.raises(DataError, match=rf"^{annotation_file}: malformed JSON \(Expecting value: line 1"):
        Coco().detection_split(tmp_path, "train", masks=True)


VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>{width}</width><height>{height}</height>
<depth>3</depth></size>{objects}</annotation>"""
VOC_OBJECT = """<object><name>{label}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"""


def write_voc(root: Path, objects=(("dog", 0, (5, 6, 30, 40)), ("person", 1, (1, 1, 20, 20)))) -> Path:
    """VOC 2012's layout: one train and one val image, each with boxes and a class map."""
    voc = root / "VOCdevkit" / "VOC2012"
    for split, name, (width, height) in (("train", "2008_000001", (48, 40)), ("val", "2008_000002", (36, 44))):
        write_image(voc / "JPEGImages" / f"{name}.jpg", width, height)
        xml = "".join(VOC_OBJECT.format(label=label, difficult=d, box=box) for label, d, box in objects)
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{name}.xml").write_text(
            VOC_XML.format(name=name, width=width, height=height, objects=xml)
        )
        classes = np.zeros((height, width), dtype=np.uint8)
        classes[5:20, 5:20], classes[4, 4:21], classes[20, 4:21] = 12, 255, 255  # a dog and its void outline
        write_label_map(voc / "SegmentationClass" / f"{name}.png", classes, palette=True)
        for task in ("Main", "Segmentation"):
            (voc / "ImageSets" / task).mkdir(parents=True, exist_ok=True)
            (voc / "ImageSets" / task / f"{split}.txt").write_text(name + "\n")
    return voc / "Annotations" / "2008_000002.xml"


def test_voc_layouts_give_boxes_and_class_maps(tmp_path):
    write_voc(tmp_path)
    detection = DetectionData(PascalVOC(), root=str(tmp_path), num_workers=0, masks=False, num_classes=20)
    detection.setup("fit")
    images, (target,) = next(iter(detection.test_dataloader()))
    assert images.shape == (1, 3, 44, 36)
    assert target["labels"].tolist() == [12, 15] and target["iscrowd"].tolist() == [0, 1]  # dog, person (difficult)
    assert target["boxes"].tolist() == [[5, 6, 30, 40], [1, 1, 20, 20]] and "masks" not in target

    semantic = SegmentationData(PascalVOC(), root=str(tmp_path), num_workers=0, num_classes=21)
    semantic.setup("fit")
    assert semantic.categories[0] == "background" and semantic.categories[12] == "dog"
    images, masks = next(iter(semantic.test_dataloader()))
    assert masks.shape == (1, 44, 36) and masks.dtype == torch.int64
    assert masks[0, 10, 10] == 12 and masks[0, 4, 10] == 255 and masks[0, 30, 30] == 0


@pytest.mark.parametrize(
    "objects,message",
    [
        ((("dog", 0, (5, 6, 40, 40)),), r"object 1: box \[5.0, 6.0, 40.0, 40.0\] .*outside the 36x44 image"),
        ((("dog", 0, (5, 6, 30, 40)), ("unicorn", 0, (1, 1, 9, 9))), r"object 2: unknown category 'unicorn'"),
    ],
    ids=["box-outside", "unknown-category"],
)
def test_inconsistent_voc_annotations_stop_with_the_file_and_the_entry(tmp_path, objects, message):
    annotation_file = write_voc(tmp_path, objects)
    with pytest.raises(DataError, match=f"^{annotation_file}: {message}"):
        PascalVOC().detection_split(tmp_path, "val", masks=False)
    annotation_file.write_text("<annotation><size>")
    with pytest.raises(DataError, match=f"^{annotation_file}: malformed XML"):
        PascalVOC().detection_split(tmp_path, "val", masks=False)


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path):
    for split in ("train", "val"):
        ids = np.zeros((32, 64), dtype=np.uint8)  # 0: unlabeled
        ids[:16], ids[16:, :32], ids[16:, 32:40] = 7, 26, 1  # road, car, ego vehicle
        stem = f"aachen_000000_00001{int(split == 'val')}"
        write_image(tmp_path / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", 64, 32)
        write_label_map(tmp_path / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", ids, palette=False)
    data = SegmentationData(Cityscapes(), root=str(tmp_path), num_workers=0, num_classes=19)
    data.setup("fit")
    assert data.categories[0] == "road" and data.categories[13] == "car" and len(data.categories) == 19
    _, masks = next(iter(data.test_dataloader()))
    assert masks[0, 0, 0] == 0 and masks[0, 20, 10] == 13 and masks[0, 20, 35] == 255 and masks[0, 20, 50] == 255

    with pytest.raises(DataError, match=f"Cityscapes \\(val\\) not found under {tmp_path / 'nowhere'}"):
        Cityscapes().semantic_split(tmp_path / "nowhere", "val")

"""Every YAML in conf/ composes, and every `_target_` in it passes the signature check and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose, composition, config_options, job_config, presets, small_batches
from dlforge.config.build import build_datamodule, build_model, build_named, build_trainer
from dlforge.config.checks import check_targets

# Every YAML file below conf/ is an option of its folder's group (nested groups too: model/net, hydra/launcher).
GROUPS = sorted({path.parent.relative_to(CONF_DIR).as_posix() for path in CONF_DIR.glob("*/**/*.yaml")})
OPTIONS = [(group, option) for group in GROUPS for option in config_options(group)]
# Groups the default config selects an option of (or null); others are added (`+group=option`), as
# hparams_search/base, which every study includes.
SELECTED_GROUPS = set(composition([]).hydra.runtime.choices)
NEEDS_GPU = {("trainer", "gpu"), ("trainer", "fsdp")}
NEEDS_FILES = {("data", "mnist"), ("data", "fashion_mnist"), ("data", "cifar10")}  # see test_data.py
NEEDS_FILES |= {("data", "shakespeare_lm"), ("data", "ag_news")}  # see test_language_model.py, test_masked_lm.py
# The user's copies of public datasets, and scenes too many to generate here: see tests/data/test_dense_data.py
NEEDS_FILES |= {("data", name) for name in ("coco", "voc_detection", "voc_segmentation", "cityscapes")}
NEEDS_FILES |= {("data", "scenes"), ("data", "scenes_semantic"), ("data", "scenes_objects")}
NEEDS_FILES |= {("data", "image_folder")}  # your own images: see tests/data/test_shards.py
# Your speech sets, and synthesised ones too slow to make whole here: see tests/data/test_speech_data.py
NEEDS_FILES |= {("data", name) for name in ("speech_commands", "librispeech", "spoken_commands", "spoken_digits")}
# Captioned scenes and emoji made from files, the user's COCO and Flickr30k: see tests/objectives/test_contrastive.py
NEEDS_FILES |= {("data", name) for name in ("scenes_captions", "emoji_captions", "coco_captions", "flickr30k")}
# Clips made from Fashion-MNIST or decoded from opencv-doc's videos, and the user's UCF101 and Kinetics: see
# tests/data/test_video_data.py
NEEDS_FILES |= {("data", name) for name in ("moving_fashion_mnist", "playback_speed", "ucf101", "kinetics")}
NEEDS_FILES |= {("data", "parallel_text")}  # your own sentence pairs: see tests/data/test_parallel_data.py


def model_reading(group: str, option: str) -> list[str]:
    """The model override an option is composed with: a preset that trains on this data (its default data,
    else data of the same datamodule) or with this net; none for other groups (the default model)."""
    if group == "data":
        datamodule = composition([f"data={option}"]).data._target_
        fitting = [preset for preset in presets() if preset.data == option]
        fitting += [preset for preset in presets() if preset.datamodule == datamodule]
    elif group == "model/net":
        fitting = [preset for preset in presets() if preset.net == option]
    else:
        return []
    if not fitting:  # data whose batches no model of this checkout reads (the detectors' come with their branch)
        pytest.skip(f"no model preset reads the batches of {group}={option}")
    return [f"model={fitting[0].name}"]


def test_every_config_group_is_covered():
    top_level = {"data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "paths", "hydra"}
    assert top_level | {"model/net", "experiment", "hparams_search", "debug"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path: Path):
    selection = f"{group}={option}" if group in SELECTED_GROUPS else f"+{group}={option}"
    overrides = [*model_reading(group, option), selection, f"paths.log_dir={tmp_path}"]
    cfg = compose("train", overrides, tmp_path / "run")
    _resolve_everything(cfg)
    check_targets(job_config(cfg))  # every key fits the signature of its _target_
    if group.split("/")[0] in ("paths", "hydra"):
        return
    if cfg.data._target_ == "dlforge.data.parallel.ParallelData":  # built from a few hundred pairs, as in test_models
        cfg = compose("train", [*overrides, *small_batches(*overrides)], tmp_path / "run")
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    if cfg.monitor is None:  # as train.py does: the objective's own metric
        cfg.monitor, cfg.monitor_mode = model.default_monitor
    callbacks = build_named(cfg.get("callbacks"))
    loggers = build_named(cfg.get("logger"))
    if (group, option) in NEEDS_GPU and not torch.cuda.is_available():
        pytest.skip("instantiating this trainer needs a GPU; its keys were checked against the signature")
    trainer = build_trainer(cfg, callbacks, loggers)
    assert trainer.precision == cfg.trainer.precision
    # A training step where the option changes what one computes: with another group's option it is the default
    # model's step on the default data, which model=cnn takes
    changes_step = group in ("data", "model", "model/net", "experiment")
    if changes_step and not {(group, option), ("data", cfg.hydra.runtime.choices.data)} & NEEDS_FILES:
        datamodule.setup("fit")
        loss = model.training_step(next(iter(datamodule.train_dataloader())), 0)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss)


def test_eval_config_composes(tmp_path: Path):
    cfg = compose("eval", ["ckpt_path=some.ckpt"], tmp_path / "run")
    _resolve_everything(cfg)
    check_targets(job_config(cfg))
    assert cfg.trainer.precision is None  # null: use the run's precision
    assert instantiate(cfg.logger.wandb).__class__.__name__ == "WandbLogger"


def _resolve_everything(cfg) -> None:
    """Resolve every interpolation of the job config and of the Hydra settings this project sets."""
    OmegaConf.to_container(job_config(cfg), resolve=True)
    assert str(cfg.paths.log_dir) in cfg.hydra.run.dir
    assert cfg.hydra.job.name == cfg.task_name
    assert cfg.hydra.job_logging.handlers.file.filename.endswith(f"{cfg.task_name}.log")

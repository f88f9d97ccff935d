"""Every YAML in conf/ composes, and every `_target_` in it passes the signature check and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose
from dlforge.config.build import build_datamodule, build_model, build_named, build_trainer
from dlforge.config.checks import check_targets

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]
NEEDS_GPU = {("trainer", "gpu"), ("trainer", "fsdp")}
NEEDS_FILES = {("data", "mnist"), ("data", "fashion_mnist"), ("data", "cifar10")}  # see test_data.py
NEEDS_FILES |= {("data", "shakespeare_lm")}  # see test_language_model.py
# Data for another kind of task than the default model's: composed with a model that reads it.
MODEL_FOR_DATA = {"pydoc_lm": "gpt", "shakespeare_lm": "gpt"}
NEEDS_FILES |= {("data", "ag_news")}  # see test_text_classification.py
MODEL_FOR_DATA |= {"pydoc_mlm": "bert_mlm", "pydoc_cls": "transformer_cls", "ag_news": "transformer_cls"}
MODEL_FOR_DATA |= {"pydoc_lm_contiguous": "transformer_xl"}


def test_every_config_file_is_covered():
    assert {"data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "paths", "hydra",
            "experiment", "debug"} <= set(GROUPS)
    assert len(OPTIONS) == len(list(CONF_DIR.glob("*/*.yaml")))


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, tmp_path: Path):
    model = [f"model={MODEL_FOR_DATA[option]}"] if group == "data" and option in MODEL_FOR_DATA else []
    cfg = compose("train", [f"{group}={option}", *model, f"paths.log_dir={tmp_path}"], tmp_path / "run")
    _resolve_everything(cfg)
    check_targets(_job_config(cfg))  # every key fits the signature of its _target_
    if group in ("paths", "hydra"):
        return
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
    if (group, option) not in NEEDS_FILES:
        datamodule.setup("fit")
        loss = model.training_step(next(iter(datamodule.train_dataloader())), 0)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss)


def test_eval_config_composes(tmp_path: Path):
    cfg = compose("eval", ["ckpt_path=some.ckpt"], tmp_path / "run")
    _resolve_everything(cfg)
    check_targets(_job_config(cfg))
    assert cfg.trainer.precision is None  # null: use the run's precision
    assert instantiate(cfg.logger.wandb).__class__.__name__ == "WandbLogger"


def _job_config(cfg):
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def _resolve_everything(cfg) -> None:
    """Resolve every interpolation of the job config and of the Hydra settings this project sets."""
    OmegaConf.to_container(_job_config(cfg), resolve=True)
    assert str(cfg.paths.log_dir) in cfg.hydra.run.dir
    assert cfg.hydra.job.name == cfg.task_name
    assert cfg.hydra.job_logging.handlers.file.filename.endswith(f"{cfg.task_name}.log")

"""Turn a composed config into the objects of a run. Shared by training and evaluation."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dlforge.config.checks import check_targets


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain nested data: what checkpoints, loggers and records store."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def build_datamodule(cfg: DictConfig):
    check_targets(cfg.data)
    return instantiate(cfg.data)


def build_model(cfg: DictConfig, for_training: bool = True):
    """The objective around its network; optimizer and scheduler factories only when training."""
    check_targets(cfg.model)
    if not for_training:
        return instantiate(cfg.model)
    check_targets(OmegaConf.create({"optimizer": cfg.optimizer, "scheduler": cfg.scheduler}))
    return instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler))


def build_named(group: DictConfig | None, arguments: dict[str, dict[str, Any]] | None = None) -> list:
    """Every `_target_` entry of a group like `callbacks` or `logger` (a mapping of name -> config), each with
    the `arguments` given under its name, if any."""
    if not group:
        return []
    check_targets(group)
    arguments = arguments or {}
    return [instantiate(node, **arguments.get(name, {})) for name, node in group.items() if node is not None]


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, **overrides):
    check_targets(cfg.trainer)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)

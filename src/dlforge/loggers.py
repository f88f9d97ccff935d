"""Experiment loggers. W&B runs offline unless credentials are present."""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlparse


def route_lightning_logs() -> None:
    """Send Lightning's messages through the handlers Hydra configured (console and run-dir log file)
    instead of its own extra console handler, which printed each message twice, minus its ad."""
    import logging
    import warnings

    import lightning  # noqa: F401 - importing it installs the handler removed here

    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )
    # lightning 2.6 vs torch 2.14: an internal deprecation the user can do nothing about
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str = "train",
    tags: Sequence[str] = (),
    notes: str | None = None,
    mode: Literal["auto", "online", "offline"] = "auto",
):
    """A Lightning WandbLogger writing under `save_dir/wandb`; `mode=auto` is online only with credentials."""
    from lightning.pytorch.loggers import WandbLogger

    if mode == "auto":
        mode = "online" if wandb_credentials_present() else "offline"
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        offline=mode == "offline",
        group=group,
        job_type=job_type,
        tags=list(tags),
        notes=notes,
    )


def finish_wandb_run() -> None:
    """End this process's W&B run, so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()

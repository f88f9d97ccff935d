"""Experiment loggers. W&B runs offline unless credentials are present and its server answers; one W&B
run per training run (rank 0 only under DDP, finished by each job of a multirun, whose jobs share a
group); the best checkpoint as an artifact. MLflow: one run per training run, with the lineage. A resumed run
continues its W&B and MLflow runs (their ids are in its lineage record) and its TensorBoard dir. The
objectives' media go to every logger through `dlforge.callbacks.media`."""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from dlforge.constraints import Positive
from dlforge.errors import UserError

log = logging.getLogger(__name__)


def route_lightning_logs() -> None:
    """Send Lightning's messages through the handlers Hydra configured (console and run-dir log file)
    instead of its own extra console handler, which printed each message twice, minus its ad."""
    import logging
    import warnings

    import lightning  # noqa: F401 - importing it installs the handler removed here

    # lightning 2.6: its package __init__ adds a console handler to the "lightning" logger
    logging.getLogger("lightning").handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )
    # lightning 2.6 vs torch 2.14: an internal deprecation the user can do nothing about
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(wandb_base_url()).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_unreachable(timeout: float) -> str | None:
    """Why W&B's server did not answer an HTTP request within `timeout` seconds, or None when it did (with
    any status: the server is there). Asked in a thread that is left behind if it takes longer, so that
    not even a name lookup without a network holds the run up longer than `timeout`."""
    import threading
    import urllib.error
    import urllib.request

    url = wandb_base_url()
    outcome = [f"{url} did not answer within {timeout:g} s (logger.wandb.probe_timeout)"]

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # an answer all the same
        except OSError as error:  # refused, no route, no such host; a timeout keeps the outcome above
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            if not isinstance(reason, TimeoutError):
                outcome[0] = f"{url}: {reason}"
            return
        outcome[0] = None

    thread = threading.Thread(target=ask, name="wandb-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0]


def wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str = "train",
    tags: Sequence[str] = (),
    notes: str | None = None,
    mode: Literal["auto", "online", "offline"] = "auto",
    probe_timeout: Annotated[float, Positive] = 5.0,
    id: str | None = None,
):
    """A Lightning WandbLogger writing under `save_dir/wandb`. `mode=auto` is online only with credentials
    and a W&B server that answers within `probe_timeout` seconds, offline otherwise (with a warning when
    there are credentials); `mode=online` without an answering server stops the run before it starts.
    `group` defaults to the multirun's sweep, so a sweep's jobs are grouped. `id` (set by `resume=`)
    continues that W&B run."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.loggers import WandbLogger

    chosen = mode
    if mode == "auto":
        mode = "online" if wandb_credentials_present() else "offline"
    # Only the global-zero process starts a W&B run: the others need not ask.
    unreachable = wandb_unreachable(probe_timeout) if mode == "online" and rank_zero_only.rank == 0 else None
    if unreachable is not None and chosen == "online":
        raise UserError(
            f"logger.wandb.mode=online, but W&B cannot be reached: {unreachable}; "
            "logger.wandb.mode=auto logs offline when it cannot"
        )
    if unreachable is not None:
        log.warning(
            f"W&B cannot be reached: {unreachable}; this run logs offline to {Path(save_dir) / 'wandb'} "
            "(`wandb sync` uploads it later)"
        )
        mode = "offline"
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        offline=mode == "offline",
        group=group or multirun_group(),
        job_type=job_type,
        tags=list(tags),
        notes=notes,
        id=id,
        resume="allow" if id else None,
    )


def import_wandb_first(logger_cfg) -> None:
    """Import the part of W&B that `wandb.init` imports (its public API, for launch jobs) now, before torch and
    Lightning, where this process will start a W&B run: its pydantic models read their field docstrings from
    source, which scans every module in sys.modules per field. Measured here: 0.4 s on its own, 1.7 s with
    torch and Lightning (~5,000 modules) imported first."""
    rank_zero = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
    targets = [node.get("_target_") for node in (logger_cfg or {}).values()]
    if rank_zero and f"{__name__}.{wandb_logger.__name__}" in targets:
        import wandb.apis.public  # noqa: F401


def multirun_group() -> str | None:
    """`<task>-multirun-<sweep dir name>` for a job of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    return f"{hydra.job.name}-multirun-{Path(hydra.sweep.dir).name}"


def wandb_run(trainer):
    """The W&B run of the trainer's WandbLogger on the global-zero process, else None (other ranks
    only hold a dummy, on which config updates raise)."""
    from lightning.pytorch.loggers import WandbLogger

    if not trainer.is_global_zero:
        return None
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


def wandb_user_error(error: BaseException) -> UserError | None:
    """W&B's own error (its server answered the probe, but did not start or keep the run) as one line
    the scripts print; None for any other error."""
    wandb = sys.modules.get("wandb")
    if wandb is None or not isinstance(error, wandb.errors.Error):
        return None
    return UserError(f"W&B failed: {str(error).splitlines()[0]}; logger.wandb.mode=offline logs without W&B's server")


def finish_wandb_run(preempted: bool = False) -> None:
    """End this process's W&B run, so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        if preempted:
            wandb.run.mark_preempting()
        wandb.finish()


def log_checkpoint_artifact(trainer, path: str, metadata: dict[str, Any]) -> None:
    """The checkpoint as a `model` artifact aliased `best`: uploaded when online, by reference to
    the local file when offline (`wandb sync` then records the reference, not a copy)."""
    run = wandb_run(trainer)
    if run is None or not path:
        return
    import wandb

    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    if run.offline:
        artifact.add_reference(Path(path).resolve().as_uri(), name=Path(path).name)
    else:
        artifact.add_file(path)
    run.log_artifact(artifact, aliases=["best"])


def mlflow_logger(
    experiment_name: str,
    tracking_uri: str,
    run_dir: str,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
):
    """A Lightning MLFlowLogger: one MLflow run per training run (rank 0 only under DDP; each job of a multirun
    its own, tagged with the multirun's group), named after the run dir. `tracking_uri` is any MLflow tracking
    URI: a file store (`file:<dir>`, the default, under the runs' log dir), `sqlite:///...`, or a server.
    `run_id` (given by `resume=`) continues that MLflow run."""
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri.startswith("file:"):
        # mlflow >= 3.7 refuses its file store unless this is set: it is "in maintenance mode", still the one
        # store that needs no server or database and that concurrent jobs of a sweep write without locking
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    group = multirun_group()
    run_path = Path(run_dir)
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=f"{run_path.parent.name}/{run_path.name}" if group else run_path.name,
        tracking_uri=tracking_uri,
        tags={**(tags or {}), "run_dir": str(run_path), **({"group": group} if group else {})},
        run_id=run_id,
    )


def mlflow_run(trainer) -> dict[str, str] | None:
    """The MLflow run of the trainer's MLFlowLogger on the global-zero process (what `resume=` continues),
    else None."""
    from lightning.pytorch.loggers import MLFlowLogger

    logger = next((logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)), None)
    if not trainer.is_global_zero or logger is None:
        return None
    return {"run_id": logger.run_id, "experiment_id": logger.experiment_id}


def log_lineage_to_mlflow(trainer, record: dict[str, Any], lineage_file: Path) -> None:
    """The lineage in the trainer's MLflow runs (global-zero process): git, data, versions and hardware as
    tags, the record itself as an artifact, and the checkpoints by reference (their file URIs as tags: MLflow
    copies any artifact it is given, and checkpoints stay in the run dir)."""
    from lightning.pytorch.loggers import MLFlowLogger

    loggers = [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]
    if not trainer.is_global_zero or not loggers:
        return
    tags = {
        f"{section}.{key}": value
        for section in ("git", "data", "versions", "hardware")
        for key, value in (record.get(section) or {}).items()
        if value not in (None, "", [], {})
    }
    tags |= {"status": record.get("status"), "seed": record.get("seed")}
    for name, path in (record.get("checkpoints") or {}).items():
        if isinstance(path, str):
            tags[f"checkpoint.{name}"] = Path(path).resolve().as_uri()
    for logger in loggers:
        for key, value in tags.items():
            logger.experiment.set_tag(logger.run_id, key, str(value))
        logger.experiment.log_artifact(logger.run_id, str(lineage_file))

"""Entry point shared by the scripts in `src/`: compose `conf/` with Hydra, run one task, report errors.

Nothing heavy is imported here, so `--help` and `--cfg job` answer without torch or lightning.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys

from dlforge.config import CONF_DIR, ROOT

# Lightning starts DDP ranks > 0 by re-running this script with its arguments plus a run dir
# (its private `_hydra_subprocess_cmd`). Under `-m` those arguments are the whole sweep, so every rank would run
# a sweep of its own, with other hyperparameters and dirs. So a job leaves its overrides and dir in
# the environment its ranks inherit, and a rank turns its arguments back into that one job.
RANK_JOB_ENV = "DLFORGE_DDP_JOB"
LIGHTNING_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def run(config_name: str, task_module: str) -> None:
    """Compose `conf/<config_name>.yaml` plus the command line and call `dlforge.<task_module>.main(cfg)`."""
    import hydra
    from omegaconf import DictConfig

    from dlforge.run.rundir import register_resolvers

    if "--params" in sys.argv:  # first: DVC composed the file without the DLFORGE_ROOT set below
        sys.argv = params_arguments(sys.argv, config_name)
    os.environ.setdefault("DLFORGE_ROOT", str(ROOT))
    rank_job = json.loads(os.environ[RANK_JOB_ENV]) if {RANK_JOB_ENV, "LOCAL_RANK"} <= os.environ.keys() else None
    if rank_job is not None:
        from dlforge.ranks import watch_launcher

        watch_launcher(rank_job["launcher_pid"], int(os.environ["LOCAL_RANK"]))  # first: rank 0 may die at any time
        sys.argv = rank_arguments(sys.argv, rank_job)
    # Let exceptions reach us instead of Hydra's multi-line report, so user errors print as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def task(cfg: DictConfig):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if rank_job is not None:
            overrides = " ".join(rank_job["overrides"])
            logging.getLogger(__name__).info(f"DDP rank {os.environ['LOCAL_RANK']} of job: {overrides}")
        try:
            refuse_cpu_oversubscription(cfg)
            with job_for_ddp_ranks():
                return importlib.import_module(f"dlforge.{task_module}").main(cfg)
        except Exception as error:
            # Hydra writes "Error executing job with overrides: [...]" above a job's error: in a single
            # run the overrides are the user's own command line, so exit here with just the one line.
            # In a multirun that line says which trial failed, and the sweep goes on.
            message = describe_user_error(error)
            if message is None or HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            _exit_with(message)

    register_resolvers()  # conf/hydra/default.yaml names run dirs with them
    try:
        task()
    except Exception as error:  # noqa: BLE001 - anything not a user error is re-raised below
        message = describe_user_error(error)
        if message is None:
            raise
        _exit_with(message)


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def params_arguments(argv: list[str], config_name: str) -> list[str]:
    """`--params FILE` (a composed config, as DVC's params.yaml) replaced by overrides composing it."""
    from dlforge.config.params import expand_params
    from dlforge.errors import UserError

    try:
        return expand_params(argv, CONF_DIR, config_name)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def refuse_cpu_oversubscription(cfg) -> None:
    """Stop before any process starts when the trainer would run more CPU processes than there are cores."""
    from dlforge.errors import ConfigError
    from dlforge.ranks import cpu_oversubscription

    problem = cpu_oversubscription(cfg.trainer) if cfg.get("trainer") is not None else None
    if problem is not None:
        raise ConfigError(problem)


def rank_arguments(argv: list[str], job: dict) -> list[str]:
    """A DDP rank's command line: Hydra's flags without `-m`, the job's overrides, the job's dir, and
    Lightning's own additions for ranks (log file name, no `.hydra/` of its own)."""
    flags = [arg for arg in argv[1:] if (arg.startswith("-") or "=" not in arg) and arg not in ("-m", "--multirun")]
    run_dir = f'hydra.run.dir="{job["output_dir"]}"'
    return [argv[0], *flags, *job["overrides"], run_dir, *_lightning_rank_overrides(argv)]


def _lightning_rank_overrides(argv: list[str]) -> list[str]:
    """What Lightning appended to a rank's command line, besides the run dir that the job's replaces."""
    # lightning 2.6: private `_hydra_subprocess_cmd` re-runs the script with its arguments plus
    # `hydra.run.dir=...`, `hydra.job.name=train_ddp_process_<rank>` and `hydra.output_subdir=null`
    return [arg for arg in argv[1:] if arg.startswith(("hydra.job.name=", "hydra.output_subdir="))]


@contextlib.contextmanager
def job_for_ddp_ranks():
    """Around one job: tell the DDP ranks Lightning may start which job (and launcher) they belong to;
    afterwards see them all gone (`dlforge.ranks`: waited for, or stopped when the job failed; a rank that
    died is the job's error) and undo what Lightning's DDP left in this process (environment, process
    group), so that the next job of a multirun starts ranks of its own instead of waiting for the finished
    ones."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from dlforge.ranks import RankDied, exit_if_launcher_died, supervisor

    hydra_config = HydraConfig.get()
    output_dir = hydra_config.runtime.output_dir
    with read_write(hydra_config.run):  # Lightning reads it to start ranks; in a multirun it is no job's dir
        hydra_config.run.dir = output_dir
    saved = {name: os.environ.get(name) for name in (RANK_JOB_ENV, *LIGHTNING_DDP_ENV)}
    job = {"overrides": list(hydra_config.overrides.task), "output_dir": output_dir, "launcher_pid": os.getpid()}
    os.environ[RANK_JOB_ENV] = json.dumps(job)
    try:
        yield
    except BaseException as error:
        # A rank that died is what ended the job; the error here is only its echo ("Connection reset by peer").
        exit_if_launcher_died()
        death = supervisor.end_job(failed=True)
        if death is not None:
            raise RankDied(death) from error
        raise
    else:
        death = supervisor.end_job(failed=False)
        if death is not None:
            raise RankDied(death)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        distributed = sys.modules.get("torch.distributed")
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()


def describe_user_error(error: BaseException) -> str | None:
    """One line naming what the user got wrong (or what befell the job: a DDP rank died), or None when the
    error is a bug to show in full."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    from dlforge.constraints import ParameterError
    from dlforge.errors import UserError
    from dlforge.ranks import RankDied

    user_errors = (UserError, RankDied, *_lightning_misconfiguration())
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, user_errors):
        # Raised by a constructor that `instantiate` called: the cause is the user's. Hydra's message
        # ends with the config node being built, which names the key a constructor cannot know.
        node = re.search(r"^full_key: (\S+)$", str(error), re.MULTILINE)
        error = error.__cause__
        if node and isinstance(error, ParameterError):
            return _one_line(f"{node[1]}.{error}")
        if node and not isinstance(error, UserError):
            return _one_line(f"{node[1]}: {error}")
    if isinstance(error, user_errors):
        return _one_line(str(error))
    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, name = (error.missing_cfg_file or "").rpartition("/")
        return f"{group}={name}: no such option; available {group} options: {', '.join(sorted(error.options))}"
    if isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        return f"{error.full_key}: {_first_line(error.msg)}"
    if isinstance(error, (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)):
        cause = error.__cause__
        message = _one_line(str(error))
        if isinstance(cause, OmegaConfBaseException):
            message += f" ({_first_line(getattr(cause, 'msg', None) or str(cause))})"
        return message
    return None


def _lightning_misconfiguration() -> tuple[type, ...]:
    """Lightning's exception for a bad Trainer argument, if Lightning was imported at all."""
    module = sys.modules.get("lightning.fabric.utilities.exceptions")
    return (module.MisconfigurationException,) if module is not None else ()


def _first_line(text: str) -> str:
    """OmegaConf appends `full_key: ...` and `object_type=...` lines to its messages."""
    return text.strip().split("\n")[0].strip()


def _one_line(text: str) -> str:
    return " ".join(text.split())

"""Entry point shared by the scripts in `src/`: compose `conf/` with Hydra, run one task, report errors.

Nothing heavy is imported here, so `--help` and `--cfg job` answer without torch or lightning.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def run(config_name: str, task_module: str) -> None:
    """Compose `conf/<config_name>.yaml` plus the command line and call `dlforge.<task_module>.main(cfg)`."""
    import hydra
    from omegaconf import DictConfig

    os.environ.setdefault("DLFORGE_ROOT", str(ROOT))
    # Let exceptions reach us instead of Hydra's multi-line report, so user errors print as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def task(cfg: DictConfig):
        return importlib.import_module(f"dlforge.{task_module}").main(cfg)

    try:
        task()
    except Exception as error:  # noqa: BLE001 - anything not a user error is re-raised below
        message = describe_user_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def describe_user_error(error: BaseException) -> str | None:
    """One line naming what the user got wrong, or None when the error is a bug to show in full."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from dlforge.errors import UserError

    if isinstance(error, UserError):
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
    lightning_misconfiguration = _lightning_misconfiguration()
    if lightning_misconfiguration is not None and isinstance(error, lightning_misconfiguration):
        return _one_line(str(error))
    return None


def _lightning_misconfiguration() -> type | None:
    module = sys.modules.get("lightning.fabric.utilities.exceptions")
    return getattr(module, "MisconfigurationException", None)


def _first_line(text: str) -> str:
    """OmegaConf appends `full_key: ...` and `object_type=...` lines to its messages."""
    return text.strip().split("\n")[0].strip()


def _one_line(text: str) -> str:
    return " ".join(text.split())

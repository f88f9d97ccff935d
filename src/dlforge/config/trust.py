"""Configs read from files are data: which `_target_`s they may name, and how they are read.

A checkpoint's `run_config` (read by `load_run` and `resume=`) and a run's `lineage.yaml` (read by
`reproduce.py`) come from files anyone can hand over, and a file that loads with
`torch.load(weights_only=True)` can still name `numpy.savetxt` or `torch.load` as a `_target_`. So
before anything is built from such a config, every `_target_` in it must be one of
- a `_target_` of a config in `conf/` (the project's, or one the user added there);
- a class defined in a `dlforge` module;
- a target the user names on this command line (`<key>._target_=<target>`).
Anything else is refused with one line naming the key, the target and the file.

Recorded configs are resolved: a `${...}` in them is literal text, never an interpolation (which
could build a config node, `${oc.create:...}`, or read the environment when accessed).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from dlforge.config import CONF_DIR
from dlforge.errors import UserError

_INTERPOLATION = re.compile(r"(\\*)\$\{")


def recorded_config(data: dict[str, Any], source: str | Path, error: type[UserError]) -> DictConfig:
    """The config recorded in `source` (a checkpoint or lineage.yaml), refused with `error` if it
    names a `_target_` this project does not trust; its values kept literal."""
    check_recorded_targets(data, source, error)
    return OmegaConf.create(literal(data))


def check_recorded_targets(data: Any, source: str | Path, error: type[UserError], where: str = "") -> None:
    """Raise `error` for the first `_target_` in `data` (nested dicts and lists) that is not trusted."""
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_" and not trusted_target(value):
                raise error(
                    f"{source}: {path}={value!r} is not a target this project ships; refusing to build it from "
                    f"a file (trusted: conf/'s targets, dlforge classes, or {path}={value} on the command line)"
                )
            check_recorded_targets(value, source, error, path)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_recorded_targets(value, source, error, f"{where}[{index}]")


def trusted_target(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    return target in conf_targets() or target in command_line_targets() or _dlforge_class(target)


@functools.cache
def conf_targets() -> frozenset[str]:
    """Every `_target_` named in `conf/**/*.yaml`."""
    found: set[str] = set()
    for path in CONF_DIR.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            _collect_targets(document, found)
    return frozenset(found)


def command_line_targets() -> set[str]:
    """Targets named as `<key>._target_=<target>` (or `+`/`++` added) on this process's command line."""
    targets = set()
    for argument in sys.argv[1:]:
        key, equals, value = argument.partition("=")
        if equals and key.lstrip("+~").split(".")[-1] == "_target_":
            targets.add(value.strip("'\""))
    return targets


def literal(value: Any) -> Any:
    """`value` (nested dicts, lists, strings) with every `${` escaped for OmegaConf, backslashes before it
    kept: OmegaConf reads 2k backslashes before `${` as k and an interpolation, 2k+1 as k and a literal."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda match: "\\" * (2 * len(match.group(1)) + 1) + "${", value)
    if isinstance(value, dict):
        return {key: literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [literal(item) for item in value]
    return value


def _collect_targets(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "_target_" and isinstance(item, str):
                found.add(item)
            _collect_targets(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_targets(item, found)


def _dlforge_class(target: str) -> bool:
    """A class defined in dlforge (not one a dlforge module imported): building it runs only our code."""
    if not target.startswith("dlforge."):
        return False
    from hydra.utils import get_object

    try:
        found = get_object(target)
    except Exception:  # noqa: BLE001 - not importable: not ours to build
        return False
    return inspect.isclass(found) and found.__module__.startswith("dlforge.")

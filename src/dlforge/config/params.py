"""The command-line overrides that compose conf/ into a given, already composed config.

`dvc exp run -S model=vit` composes conf/train.yaml into params.yaml with every interpolation
resolved, and keeps no record of the overrides. Training from that file as it stands would lose the
links that code completes at run time (`monitor: null` means the objective's own metric, which the
checkpoint callback reads through `${monitor}`). So `python src/train.py --params params.yaml` runs the
overrides that compose conf/ into exactly that file: for each config group the option that leaves
the fewest values differing (of the options whose files agree with the file's `_target_`s: composing
one takes ~0.3 s), then each value still differing. The run is then an ordinary Hydra run
of those overrides, and saves the same config as `python src/train.py <overrides>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from dlforge.errors import ConfigError

PARAMS_FLAG = "--params"


def expand_params(argv: list[str], config_dir: Path, config_name: str) -> list[str]:
    """`argv` with `--params FILE` replaced by the overrides that compose conf/ into FILE."""
    at = argv.index(PARAMS_FLAG)
    if at + 1 >= len(argv):
        raise ConfigError(f"{PARAMS_FLAG} needs a composed config file, e.g. {PARAMS_FLAG} params.yaml")
    path = Path(argv[at + 1])
    if not path.is_file():
        raise ConfigError(f"{PARAMS_FLAG} {path}: no such file (`dvc exp run` composes params.yaml from conf/)")
    composed = yaml.safe_load(path.read_text())
    return [*argv[:at], *overrides_for(config_dir, config_name, composed, str(path)), *argv[at + 2 :]]


def overrides_for(config_dir: Path, config_name: str, composed: dict, name: str) -> list[str]:
    from hydra import compose, initialize_config_dir

    def resolved(overrides: list[str]) -> tuple[dict | None, dict | None]:
        """The config of `overrides`, with and without its interpolations resolved."""
        try:
            config = compose(config_name, overrides=overrides)
            return OmegaConf.to_container(config, resolve=True), OmegaConf.to_container(config)
        except Exception:  # noqa: BLE001 - an option that does not fit the others (a text model on images)
            return None, None

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        overrides: list[str] = []
        current, unresolved = resolved(overrides)
        for group in _groups(config_dir, config_name, composed):
            if _distance(current, composed) == 0:
                break
            options = [f"{group}={path.stem}" for path in sorted((config_dir / group).glob("*.yaml"))]
            # Composing one takes ~0.3 s: not the options whose files contradict the composed config
            options = [option for option in options if not _contradicts(config_dir, option, composed)]
            candidates = {option: resolved([*overrides, option]) for option in options}
            if not candidates:
                continue
            # Of options composing the same config, the preset (`model=gpt`) over the one it extends (`causal_lm`)
            choice = min(
                candidates,
                key=lambda option: (_distance(candidates[option][0], composed), not _extends(config_dir, option)),
            )
            if _distance(candidates[choice][0], composed) < _distance(current, composed):
                overrides.append(choice)
                current, unresolved = candidates[choice]
        # Then values, one at a time, set ones before those that follow from others (`data.seed: ${seed}`).
        while differing := _value_overrides(current, composed):
            choice = min(differing, key=lambda pair: _is_interpolation(unresolved, pair[0]))[1]
            current, unresolved = resolved([*overrides, choice]) if choice not in overrides else (None, None)
            if current is None:  # e.g. Hydra cannot delete a null value: the file predates a key of conf/
                raise ConfigError(
                    f"{name}: conf/{config_name}.yaml does not compose into it (at `{choice}`); "
                    "if conf/ changed since it was written, `dvc exp run` composes it anew"
                )
            overrides.append(choice)
    return overrides


def _groups(config_dir: Path, config_name: str, composed: dict) -> list[str]:
    """The primary config's groups: those with a top-level key of their own first (data, model ...),
    then those that overlay the whole config (experiment, debug ...). Not Hydra's own settings."""
    defaults = OmegaConf.to_container(OmegaConf.load(config_dir / f"{config_name}.yaml")).get("defaults", [])
    groups = [group for entry in defaults if isinstance(entry, dict) for group in entry if group != "hydra"]
    return sorted(groups, key=lambda group: group not in composed)


def _contradicts(config_dir: Path, option: str, composed: dict) -> bool:
    """Whether a group option sets a `_target_` other than the composed config's. Such an option is left out
    without composing it. That cannot make the overrides wrong, only longer: whatever the options chosen, the
    values still differing are set one by one after them."""
    for path, target in _option_targets(config_dir, option).items():
        have: Any = composed
        for key in path:
            have = have.get(key) if isinstance(have, dict) else None
        if have != target:
            return True
    return False


def _option_targets(config_dir: Path, option: str, top: bool = True) -> dict[tuple[str, ...], str]:
    """The `_target_`s an option sets, by path: its own file's over those of the option it extends and of the
    options of its subgroups it chooses (`override net: vit`); an overlay's (`# @package _global_`) over those
    of the options it chooses for other groups (`override /model: yolo`). Not what a group option chooses for
    another group, which loses to the command line's or an overlay's choice; nor a plain default (`net: cnn`),
    which an option extending it may override; nor Hydra's settings, which the composed config has not."""
    group, name = option.split("=")
    file = config_dir / group / f"{name}.yaml"
    if not file.is_file():
        return {}
    text = file.read_text()
    own = yaml.safe_load(text) or {}
    overlay = top and "# @package _global_" in text
    named: list[str] = []
    for entry in own.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_" and "/" not in entry:
            named.append(f"{group}={entry}")
        for key, value in entry.items() if isinstance(entry, dict) else ():
            chosen = key.removeprefix("override ").partition("@")[0]
            if key.startswith("override ") and isinstance(value, str) and (overlay or not chosen.startswith("/")):
                named.append(f"{chosen[1:]}={value}" if chosen.startswith("/") else f"{group}/{chosen}={value}")
    targets: dict[tuple[str, ...], str] = {}
    for other in named:
        targets |= _option_targets(config_dir, other, top=False)
    prefix = () if "# @package _global_" in text else tuple(group.split("/"))
    targets |= {(*prefix, *keys, "_target_"): target for keys, target in _targets(own)}
    return {path: target for path, target in targets.items() if path[0] != "hydra"}


def _targets(config: Any, keys: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(path, value) of each `_target_` set in `config` as a literal, not an interpolation."""
    if not isinstance(config, dict):
        return []
    target = config.get("_target_")
    found = [(keys, target)] if isinstance(target, str) and "${" not in target else []
    return found + [pair for key, child in config.items() for pair in _targets(child, (*keys, str(key)))]


def _extends(config_dir: Path, option: str) -> bool:
    """Whether a group option's defaults list starts from another option of its group (a preset)."""
    group, name = option.split("=")
    defaults = OmegaConf.load(config_dir / group / f"{name}.yaml").get("defaults", [])
    return any(isinstance(entry, str) and entry != "_self_" for entry in defaults)


def _leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict) or not config:
        return {prefix: config}
    return {path: value for key, child in config.items() for path, value in _leaves(child, f"{prefix}{key}.").items()}


def _distance(config: dict | None, target: dict) -> int:
    if config is None:
        return 1 << 30
    have, want = _leaves(config), _leaves(target)
    return len(have.keys() ^ want.keys()) + sum(not _same(have[key], want[key]) for key in have.keys() & want.keys())


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 and 1.0 differ, as they would in the saved config)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _value_overrides(have: dict, want: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(key, override) for each value of `have` that differs from `want`."""
    overrides = []
    for key, value in want.items():
        path = f"{prefix}{key}"
        if key not in have:
            overrides.append((path, f"+{path}={_literal(value)}"))
        elif isinstance(value, dict) and isinstance(have[key], dict):
            overrides += _value_overrides(have[key], value, f"{path}.")
        elif not _same(have[key], value):
            overrides.append((path, f"{path}={_literal(value)}"))
    return overrides + [(f"{prefix}{key}", f"~{prefix}{key}") for key in have if key not in want]


def _is_interpolation(config: dict, path: str) -> bool:
    for key in path.split("."):
        if not isinstance(config, dict) or key not in config:
            return False
        config = config[key]
    return isinstance(config, str) and "${" in config


def _literal(value: Any) -> str:
    """`value` in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_literal(item)}" for key, item in value.items()) + "}"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

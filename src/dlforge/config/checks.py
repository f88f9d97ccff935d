"""Check a composed config against the code it will instantiate, before anything is built.

The signatures of the `_target_`s are the schema: an unknown key, a value of the wrong type, a value
outside a `Literal` or outside the `Range` an `Annotated` parameter carries (`dlforge.constraints`)
fails at start-up with the key's full path and what is allowed, instead of deep inside a constructor (or
never, for a silently ignored typo).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlforge.constraints import Positive, Range
from dlforge.errors import ConfigError

_UNKNOWN = None  # an annotation this checker does not understand: accept the value

# Ranges of parameters of code the project does not own, whose signatures cannot carry them:
# (the target's module prefix, parameter, range).
_EXTERNAL_RANGES = (
    ("torch.optim.", "lr", Positive),
    ("lightning.pytorch.trainer.", "max_epochs", Range(ge=-1)),  # -1: no end
    ("lightning.pytorch.trainer.", "max_steps", Range(ge=-1)),
    ("lightning.pytorch.trainer.", "devices", Range(ge=1, also=(-1,))),  # -1: all
    ("lightning.pytorch.trainer.", "num_nodes", Positive),
    ("lightning.pytorch.trainer.", "accumulate_grad_batches", Positive),
)


def check_targets(cfg: DictConfig) -> None:
    """Raise ConfigError for the first `_target_` node whose keys do not fit the target's signature."""
    for node in _target_nodes(cfg):
        target = _locate(_full_key(node, "_target_"), node._target_)
        parameters, accepts_any_key = _parameters(target)
        for key in node:
            if isinstance(key, str) and key.startswith("_") and key.endswith("_"):
                continue
            where = _full_key(node, key)
            if key not in parameters:
                if accepts_any_key:
                    continue
                allowed = ", ".join(name for name in parameters) or "none"
                raise ConfigError(f"{where}: not a parameter of {node._target_}; allowed: {allowed}")
            value = node[key]
            if isinstance(value, DictConfig) and "_target_" in value:
                continue  # a nested object, checked as its own node
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
            _check_value(where, value, parameters[key])


def check_keys(cfg: DictConfig, schema: type, groups: typing.Iterable[str]) -> None:
    """Refuse a top-level key that is neither a field of `schema` nor one of the config `groups`
    (`+seeed=1`, say), as a misspelt nested key is refused."""
    known = set(groups) | {field.name for field in dataclasses.fields(schema)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: not an option of {cfg.task_name}; allowed: {', '.join(sorted(known))}")


def check_fields(cfg: DictConfig, schema: type, keys: typing.Iterable[str] | None = None) -> None:
    """Type-check plain top-level keys of `cfg` against the fields of a dataclass."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for field in dataclasses.fields(schema):
        if keys is not None and field.name not in keys:
            continue
        if field.name not in cfg:
            raise ConfigError(f"{field.name}: missing from the config")
        value = cfg[field.name]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        _check_value(field.name, value, hints[field.name])


# omegaconf 2.3: private node API. Kept to these helpers: a node's dotted path from the config's root
# (which messages name), whether it is null or ??? without resolving it, and a child without resolving it.
def _full_key(node: DictConfig, key: str) -> str:
    return node._get_full_key(key)


def _is_empty(node: Any) -> bool:
    return OmegaConf.is_config(node) and (node._is_none() or node._is_missing())


def _child(node: DictConfig, key: Any) -> Any:
    return node._get_node(key)


def _target_nodes(node: Any):
    if _is_empty(node):
        return
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield node
        children = [_child(node, key) for key in node]
    elif isinstance(node, ListConfig):
        children = list(node)
    else:
        return
    for child in children:
        yield from _target_nodes(child)


def _locate(where: str, target: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:  # ImportError, AttributeError, ValueError, all wrapped by Hydra
        raise ConfigError(f"{where}: cannot import {target!r}") from error


def _parameters(target: Any) -> tuple[dict[str, Any], bool]:
    """The target's keyword parameters with their resolved annotations, and whether it takes **kwargs."""
    function = target.__init__ if inspect.isclass(target) else target
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references in third-party code: check names only
        hints = {}
    parameters = {}
    accepts_any_key = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any_key = True
        elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            parameters[name] = hints.get(name, Any)
    module = getattr(target, "__module__", None) or ""
    for prefix, name, valid in _EXTERNAL_RANGES:
        if module.startswith(prefix) and name in parameters:
            parameters[name] = Annotated[parameters[name], valid]
    return parameters, accepts_any_key


def _check_value(where: str, value: Any, annotation: Any) -> None:
    if value is None:
        return
    if _matches(value, annotation) is not False:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for valid in _ranges(annotation):
                if not valid.allows(value):
                    raise ConfigError(f"{where}: {value!r} is out of range; allowed: {valid}")
        return
    if typing.get_origin(annotation) is Literal or _literal_choices(annotation):
        allowed = ", ".join(str(choice) for choice in _literal_choices(annotation))
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of: {allowed}")
    raise ConfigError(f"{where}: expected {_describe(annotation)}, got {value!r} ({type(value).__name__})")


def _matches(value: Any, annotation: Any) -> bool | None:
    """True/False when the annotation is understood, None (accept) otherwise."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if inspect.isclass(annotation) and typing.Protocol in annotation.__mro__:
        return False  # objects a Protocol describes are built from `_target_` nodes, never given as values
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Annotated:
        return _matches(value, arguments[0])
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [_matches(value, arm) for arm in arguments]
        if any(verdict is True for verdict in verdicts):
            return True
        return _UNKNOWN if _UNKNOWN in verdicts else False
    if origin is Literal:
        return value in arguments
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is Path or annotation is typing.Optional[Path]:
        return isinstance(value, (str, Path))
    sequence_types = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
    if annotation in sequence_types or origin in sequence_types:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return False
        homogeneous = len(arguments) == 1 or (len(arguments) == 2 and arguments[1] is Ellipsis)
        item_type = arguments[0] if homogeneous else Any
        return all(_matches(item, item_type) is not False for item in value)
    if annotation in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, (dict, DictConfig))
    return _UNKNOWN


def _ranges(annotation: Any) -> list[Range]:
    """The ranges an annotation carries, in `Annotated` metadata at its top or in its union's arms."""
    if typing.get_origin(annotation) is Annotated:
        return [*_ranges(typing.get_args(annotation)[0]), *(m for m in annotation.__metadata__ if isinstance(m, Range))]
    return [valid for arm in typing.get_args(annotation) for valid in _ranges(arm)]


def _literal_choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    choices = []
    for arm in typing.get_args(annotation):
        choices += _literal_choices(arm)
    return choices


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _describe(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arm) for arm in typing.get_args(annotation) if arm is not type(None))
    if origin is not None:
        return str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return getattr(annotation, "__name__", str(annotation))

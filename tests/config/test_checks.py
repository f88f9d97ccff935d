"""The config checker: signatures of `_target_`s are the schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

import pytest
from omegaconf import OmegaConf

from dlforge.config.checks import check_fields, check_targets
from dlforge.errors import ConfigError


def build(
    size: int,
    names: Sequence[str] = (),
    rate: float = 0.1,
    mode: Literal["a", "b"] = "a",
    tag: Optional[str] = None,
    flag: bool = False,
):
    return size


def open_ended(size: int, **extra):
    return size


def _cfg(**node):
    return OmegaConf.create({"group": {"_target_": f"{__name__}.build", "size": 1, **node}})


def test_a_config_that_fits_passes():
    check_targets(_cfg(names=["x", "y"], rate=1, mode="b", tag=None, flag=True))  # int is a fine float


@pytest.mark.parametrize(
    "node,message",
    [
        ({"sise": 2}, "group.sise: not a parameter of tests.test_config_checks.build; allowed: size, names, rate"),
        ({"size": "big"}, "group.size: expected int, got 'big' (str)"),
        ({"size": True}, "group.size: expected int, got True (bool)"),
        ({"rate": "fast"}, "group.rate: expected float, got 'fast'"),
        ({"mode": "c"}, "group.mode: 'c' is not allowed; choose one of: a, b"),
        ({"names": [1, 2]}, "group.names: expected Sequence[str], got [1, 2]"),
        ({"names": "x"}, "group.names: expected Sequence[str], got 'x'"),
        ({"tag": 3}, "group.tag: expected str, got 3"),
        ({"flag": "yes"}, "group.flag: expected bool, got 'yes'"),
    ],
)
def test_misfits_are_named_with_what_is_allowed(node, message):
    with pytest.raises(ConfigError) as error:
        check_targets(_cfg(**node))
    assert str(error.value).startswith(message.replace("tests.test_config_checks", __name__))


def test_nested_targets_are_checked_and_kwargs_accept_anything():
    cfg = OmegaConf.create(
        {
            "outer": {
                "_target_": f"{__name__}.open_ended",
                "size": 1,
                "anything": 2,
                "inner": {"_target_": f"{__name__}.build", "size": "x"},
            }
        }
    )
    with pytest.raises(ConfigError, match=r"^outer.inner.size: expected int"):
        check_targets(cfg)


def test_unimportable_target():
    with pytest.raises(ConfigError, match=r"^model._target_: cannot import 'dlforge.nets.nope.Net'"):
        check_targets(OmegaConf.create({"model": {"_target_": "dlforge.nets.nope.Net"}}))


def test_top_level_fields_of_the_train_config(tmp_path):
    from conftest import compose
    from dlforge.tasks.train import TrainOptions

    cfg = compose("train", [], tmp_path)
    check_fields(cfg, TrainOptions)
    cfg.monitor_mode = "up"
    with pytest.raises(ConfigError, match="monitor_mode: 'up' is not allowed; choose one of: min, max"):
        check_fields(cfg, TrainOptions)

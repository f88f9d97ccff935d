"""The config checker: signatures of `_target_`s are the schema."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Optional

import pytest
from omegaconf import OmegaConf

from dlforge.config.checks import check_fields, check_targets
from dlforge.constraints import Fraction, Positive, Probability, Range
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


def bounded(
    count: Annotated[int, Positive],
    share: Annotated[float, Fraction] = 0.5,
    rate: Optional[Annotated[float, Probability]] = None,
    devices: Annotated[int | str, Range(ge=1, also=(-1,))] = 1,
):
    return count


@pytest.mark.parametrize(
    "node,message",
    [
        ({"count": 0}, "group.count: 0 is out of range; allowed: > 0"),
        ({"share": 1.5}, "group.share: 1.5 is out of range; allowed: > 0 and < 1"),
        ({"share": 0}, "group.share: 0 is out of range; allowed: > 0 and < 1"),
        ({"rate": 1}, "group.rate: 1 is out of range; allowed: >= 0 and < 1"),
        ({"devices": 0}, "group.devices: 0 is out of range; allowed: >= 1, or -1"),
        ({"count": "x"}, "group.count: expected int, got 'x' (str)"),
    ],
)
def test_values_outside_an_annotated_range_are_named_with_the_range(node, message):
    with pytest.raises(ConfigError) as error:
        check_targets(OmegaConf.create({"group": {"_target_": f"{__name__}.bounded", "count": 1, **node}}))
    assert str(error.value) == message


def test_values_inside_an_annotated_range_pass():
    node = {"_target_": f"{__name__}.bounded", "count": 3, "share": 0.2, "rate": 0, "devices": -1}
    check_targets(OmegaConf.create({"group": node}))
    check_targets(OmegaConf.create({"group": {**node, "devices": "auto", "rate": None}}))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.batch_size=0"], "data.batch_size: 0 is out of range; allowed: > 0"),
        (["optimizer.lr=-1"], "optimizer.lr: -1 is out of range; allowed: > 0"),
        (["optimizer=sgd", "optimizer.lr=-1"], "optimizer.lr: -1 is out of range; allowed: > 0"),
        (["trainer.max_epochs=-2"], "trainer.max_epochs: -2 is out of range; allowed: >= -1"),
        (["trainer.max_steps=-5"], "trainer.max_steps: -5 is out of range; allowed: >= -1"),
        (["model.net.dropout=2"], "model.net.dropout: 2 is out of range; allowed: >= 0 and < 1"),
        (["data.val_fraction=1.5"], "data.val_fraction: 1.5 is out of range; allowed: > 0 and < 1"),
        (["trainer=ddp", "trainer.devices=0"], "trainer.devices: 0 is out of range; allowed: >= 1, or -1"),
        (["model=gpt", "data.block_size=0"], "data.block_size: 0 is out of range; allowed: > 0"),
        (["model=gpt", "model.net.heads=0"], "model.net.heads: 0 is out of range; allowed: > 0"),
    ],
)
def test_out_of_range_values_in_the_project_configs(overrides, message, tmp_path):
    from conftest import compose

    with pytest.raises(ConfigError) as error:
        check_targets(compose("train", overrides, tmp_path))
    assert str(error.value) == message


def test_the_project_configs_are_within_range(tmp_path):
    from conftest import compose

    for overrides in ([], ["model=gpt"], ["trainer=ddp", "trainer.devices=-1"], ["trainer.max_epochs=-1"]):
        check_targets(compose("train", overrides, tmp_path))

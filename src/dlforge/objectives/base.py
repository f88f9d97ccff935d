"""What every objective shares: the contract its network must meet, the optimizer and schedule wiring,
the default monitor, fine-tuning from another run's network weights and freezing, and the hooks through
which the run and the loggers get test artifacts and sample media without guessing at the objective's
kind."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from lightning.pytorch import LightningModule
from torch import nn

from dlforge.data.tokenizers import Tokenizer
from dlforge.errors import ConfigError
from dlforge.objectives.media import Media, TestArtifact
from dlforge.objectives.optim import configure
from dlforge.objectives.pretrained import load_pretrained_net

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
Freeze = Literal["none", "embeddings", "all"]


@runtime_checkable
class TokenizedData(Protocol):
    """A datamodule whose examples are token ids, encoded by `tokenizer` (None until it is set up)."""

    tokenizer: Tokenizer | None


def data_tokenizer(datamodule: Any) -> Tokenizer | None:
    """The tokenizer the datamodule encodes text with; None for data that is not text."""
    return datamodule.tokenizer if isinstance(datamodule, TokenizedData) else None


@runtime_checkable
class CategorizedData(Protocol):
    """A datamodule that names its classes (detection and segmentation data): label k is `categories[k - 1]`
    for object detection (labels 1..K), `categories[k]` for semantic maps (0 is background)."""

    categories: list[str]


def data_categories(datamodule: Any) -> list[str] | None:
    """The class names of the datamodule; None where it names none."""
    return list(datamodule.categories) if isinstance(datamodule, CategorizedData) else None


class Objective(LightningModule):
    """A network `net` trained for one kind of objective; `net` must meet the objective's `net_contract`
    (a Protocol of `dlforge.nets.contracts`), which is checked when the objective is built.

    `optimizer` is called with the parameter groups, `scheduler` with the optimizer and the total number
    of optimizer steps; both come from config as partials and are never saved in checkpoints (an
    objective built without them can only evaluate).

    Fine-tuning: `pretrained` (a checkpoint of a run whose `net` is built the same way, e.g. an encoder
    pretrained by `model=bert_mlm`) initialises the net when fitting starts (a resumed run then restores
    its own weights over it); with `pretrained_part` (a submodule's dotted name) the checkpoint's net is
    built as that part and initialises it alone (a detector's `features` pretrained as a classifier).
    `freeze` keeps the net's embedding layers or the whole net fixed, so with `all` only what the objective
    puts on the net (a head) trains.

    `channels_last` stores the net's 4-d weights (its 2-d convolutions') as NHWC, the layout oneDNN's and
    cuDNN's convolutions run fastest in: their outputs follow it, with the same results to float tolerance,
    while the images come in as they are (`python -m bench.memory_format`). Loading weights copies them into
    the net's layout, so a checkpoint loads into a net of either layout.

    `compile` runs the net's forward (and so its backward) through `torch.compile`, which changes speed and
    not results beyond float tolerance. The module is compiled in place (`nn.Module.compile`), not wrapped,
    so its state_dict keys, and so checkpoints, are those of the plain net.
    """

    net_contract: ClassVar[type]  # what the objective calls on its net
    default_monitor: ClassVar[tuple[str, Literal["min", "max"]]]  # used when the config's `monitor` is null

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        pretrained: str | None = None,
        freeze: Freeze = "none",
        compile: bool = False,
        pretrained_part: str | None = None,
        channels_last: bool = False,
    ):
        super().__init__()
        if missing := missing_members(net, self.net_contract):
            net_class = f"{type(net).__module__}.{type(net).__qualname__}"
            raise ConfigError(
                f"model.net: {net_class} is not a {self.net_contract.__name__}, which {type(self).__name__} needs "
                f"(it lacks {', '.join(missing)})"
            )
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.pretrained = pretrained
        if pretrained_part is not None:
            try:
                net.get_submodule(pretrained_part)
            except AttributeError as error:
                raise ConfigError(
                    f"model.pretrained_part={pretrained_part}: {type(net).__name__} has no such part"
                ) from error
        self.pretrained_part = pretrained_part
        self.freeze = freeze
        embeddings = [module for module in net.modules() if isinstance(module, nn.Embedding)]
        frozen = {"none": [], "embeddings": embeddings, "all": [net]}[freeze]
        if freeze != "none" and not frozen:
            raise ConfigError(f"model.freeze={freeze}: {type(net).__name__} has no embedding layers")
        for module in frozen:
            module.requires_grad_(False)  # param_groups leaves them out of the optimizer
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if compile:
            net.compile()

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.pretrained is not None:
            tokenizer = data_tokenizer(self.trainer.datamodule)
            load_pretrained_net(self.net, self.pretrained, tokenizer, self.pretrained_part)
        elif self.pretrained_part is not None:  # a preset made for a pretrained part, run without its checkpoint
            raise ConfigError(
                f"model.pretrained_part={self.pretrained_part} takes its weights from model.pretrained, which is "
                "null; give the pretraining run's checkpoint (model.pretrained=<run dir>/checkpoints/best.ckpt)"
            )

    def configure_optimizers(self):
        if not any(parameter.requires_grad for parameter in self.parameters()):
            raise ConfigError(f"model.freeze={self.freeze}: nothing of {type(self).__name__} is left to train")
        return configure(self, self.optimizer_factory, self.scheduler_factory)

    def test_artifacts(self) -> list[TestArtifact]:
        """What the last test computed beyond scalar metrics (a confusion matrix, say): recorded with the
        run's final metrics and shown by loggers."""
        return []

    def sample_media(self, batch: Any, tokenizer: Tokenizer | None) -> list[Media]:
        """Predictions on (the start of) a test batch, for loggers to show; `tokenizer` decodes token ids
        when the data is text."""
        return []


def missing_members(net: nn.Module, contract: type) -> list[str]:
    """The members (attributes and methods) the Protocol `contract` declares that `net` lacks.

    Not `isinstance(net, contract)`: from Python 3.12 on that looks members up statically
    (`inspect.getattr_static`), which misses an nn.Module's submodules such as `token_embedding`."""
    protocols = contract.__mro__[: contract.__mro__.index(Protocol)]
    declared = {
        name
        for protocol in protocols
        for name in [*inspect.get_annotations(protocol), *vars(protocol)]
        if not name.startswith("_")
    }
    return sorted(name for name in declared if not hasattr(net, name))

"""Optimizer parameter groups and learning-rate schedules, built by the objectives from config."""

from __future__ import annotations

import math

import torch
from lightning.pytorch.plugins.precision import FSDPPrecision, MixedPrecision, Precision
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from dlforge.errors import ConfigError


def param_groups(module: nn.Module) -> list[dict]:
    """Weight decay on matrices and kernels only, not on biases, norms, embeddings of size 1, tokens."""
    decay, no_decay = [], []
    for parameter in module.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class WarmupCosine:
    """Learning-rate factor: linear warmup from 0, then cosine decay to `min_lr_ratio`.

    A callable object, not a closure, so LambdaLR stores its (plain) state in checkpoints.
    """

    def __init__(self, total_steps: int, warmup_fraction: float, min_lr_ratio: float):
        if math.isinf(total_steps):  # Lightning's estimate for trainer.max_epochs=-1 without max_steps
            raise ConfigError(
                "trainer.max_epochs=-1 trains without end, so the warmup-cosine schedule has no length: "
                "set trainer.max_steps, or scheduler=constant"
            )
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_fraction * self.total_steps)
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_fraction, min_lr_ratio))


def constant(optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def configure(module, optimizer_factory, scheduler_factory) -> dict:
    """What an objective's `configure_optimizers` returns: the optimizer over `param_groups(module)`
    and, if a schedule is configured, the schedule stepped per optimizer step over the whole run."""
    if optimizer_factory is None:
        raise RuntimeError(f"{type(module).__name__} was built without an optimizer; it can only evaluate")
    optimizer = optimizer_factory(param_groups(module))
    if not _scales_gradients(module.trainer.precision_plugin):
        # No gradient scaler (fp32, bf16): a fused optimizer then has nothing to unscale, yet under
        # bf16-mixed Lightning refuses to clip its gradients as if it had (Lightning#21435).
        _declare_unscaled(optimizer)
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    scheduler = scheduler_factory(optimizer, total_steps=module.trainer.estimated_stepping_batches)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _scales_gradients(plugin: Precision) -> bool:
    """Whether the precision plugin scales the loss (16-mixed): lightning 2.6's plugins that can,
    MixedPrecision and FSDPPrecision, then hold a `scaler`."""
    return isinstance(plugin, (MixedPrecision, FSDPPrecision)) and plugin.scaler is not None


def _declare_unscaled(optimizer: torch.optim.Optimizer) -> None:
    """Tell Lightning the optimizer's step does not unscale gradients itself.
    torch 2.14 / lightning 2.6: private `Optimizer._step_supports_amp_scaling`, set by fused optimizers
    and read by Lightning's precision plugins before clipping."""
    optimizer._step_supports_amp_scaling = False

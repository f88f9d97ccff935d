"""What a variant of a model costs and buys: its test metrics (through the objective's own test step, as
`eval.py` computes them), how closely its outputs follow the checkpoint's, its size and parameters, and its
latency."""

from __future__ import annotations

import contextlib
import gzip
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]  # inputs -> logits: a module, an ONNX session, a program


@contextlib.contextmanager
def forward_replaced(objective: nn.Module, forward: Forward):
    """The objective with its forward pass replaced by `forward` (an exported or compressed form of it):
    its test step then computes loss and metrics from that form's logits."""
    # An instance attribute (nn.Module.__call__ looks `forward` up on the instance), wrapped so that a module
    # (an exported program) is not registered as a submodule the trainer would then switch to eval mode.
    objective.forward = lambda inputs: forward(inputs)
    try:
        yield objective
    finally:
        del objective.forward


def test_metrics(trainer, objective: nn.Module, datamodule, forward: Forward | None = None) -> dict[str, float]:
    """The objective's test metrics, computed with `forward` in place of its own forward pass if given."""
    with forward_replaced(objective, forward) if forward is not None else contextlib.nullcontext():
        (metrics,) = trainer.test(objective, datamodule=datamodule, verbose=False)
    return metrics


@dataclass
class Parity:
    """How a variant's logits compare with the reference's over a whole split."""

    max_abs_diff: float
    predictions: int
    same_predictions: int  # argmax over the last axis (the class, or the next token) equal to the reference's

    @property
    def agreement(self) -> float:
        return self.same_predictions / self.predictions

    def holds(self, tolerance: float) -> bool:
        """Same predictions everywhere and logits within `tolerance`: what an fp32 export must give."""
        return self.same_predictions == self.predictions and self.max_abs_diff <= tolerance


@torch.inference_mode()
def parity(reference: Forward, candidate: Forward, batches: Iterable) -> Parity:
    max_abs_diff, predictions, same = 0.0, 0, 0
    for inputs, *_ in batches:
        expected, actual = reference(inputs), candidate(inputs).to(torch.float32)
        max_abs_diff = max(max_abs_diff, (expected - actual).abs().max().item())
        predictions += expected[..., 0].numel()
        same += (expected.argmax(-1) == actual.argmax(-1)).sum().item()
    return Parity(max_abs_diff, predictions, same)


def file_sizes(path: Path) -> tuple[int, int]:
    """Bytes of the file, and of the file gzipped (how much of it is redundancy, such as pruned zeros)."""
    data = path.read_bytes()
    return len(data), len(gzip.compress(data, compresslevel=6))


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """Parameters (tied ones once) and how many of them are not zero."""
    # torchao's int8 tensors implement few ops; their integers are in `qdata`
    values = [getattr(p, "qdata", p).detach() for p in module.parameters()]
    return sum(v.numel() for v in values), sum(int(torch.count_nonzero(v)) for v in values)


def onnx_parameter_counts(path: Path) -> tuple[int, int]:
    """Elements of an ONNX model's initializers (weights, and a quantized model's scales and zero points)
    and how many of them are not zero."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer]
    arrays = [array for array in arrays if array.ndim > 0 or array.size > 1] or arrays  # not the constant scalars
    return sum(array.size for array in arrays), sum(int(np.count_nonzero(array)) for array in arrays)


@dataclass
class Latency:
    p50_ms: float
    p90_ms: float
    calls: int


@torch.inference_mode()
def latency(forward: Forward, inputs: torch.Tensor, threads: int, min_time: float = 0.2, min_calls: int = 5) -> Latency:
    """p50 and p90 of single calls of `forward(inputs)` with `threads` torch threads (`torch.utils.benchmark`
    sets and restores them; an ONNX Runtime session has its own), after warm-up calls; calls go on until
    `min_time` seconds were timed and at least `min_calls` were made."""
    from torch.utils import benchmark

    timer = benchmark.Timer("forward(inputs)", globals={"forward": forward, "inputs": inputs}, num_threads=threads)
    timer.timeit(2)  # warm-up: allocations, ONNX Runtime's first-run optimisations
    times: list[float] = []
    while sum(times) < min_time or len(times) < min_calls:
        times.append(timer.timeit(1).times[0])
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return Latency(1000 * statistics.median(times), 1000 * deciles[8], len(times))

"""int8 quantization on the CPU paths that have int8 kernels: ONNX Runtime's dynamic quantization (int8
MatMul/Gemm weights, activations quantized per call) and static QDQ quantization (per-channel weights,
activation ranges calibrated on the run's own data), and torchao's int8 Linear layers inside PyTorch
(weight-only, or with dynamically quantized activations). Not `torch.ao.quantization`: deprecated."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from dlforge.compress.export import ExportError, naming_failures


def onnx_dynamic_int8(source: Path, target: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with naming_failures("ONNX Runtime dynamic quantization", nn.Module()):
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def onnx_static_int8(source: Path, target: Path, calibration: Iterable[torch.Tensor]) -> Path:
    """QDQ format, per-channel int8 weights and uint8 activations (ONNX Runtime's advice for x86 CPUs),
    with activation ranges from the `calibration` inputs.

    Only the layers with weights are quantized (Conv, Gemm, MatMul by a constant), with their inputs and
    outputs: softmax, norms and residual sums stay fp32. Quantizing every op raised a baby GPT's test loss by
    37 % (1.776 -> 2.435; weight layers alone: +0.04 %). Activation ranges clip the calibration's outermost
    0.01 % (percentile): min-max ranges cost a digits ViT 0.84 points, these 0.28."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            inputs = next(self.batches, None)
            return None if inputs is None else {"inputs": inputs.numpy()}

    with tempfile.TemporaryDirectory() as scratch, naming_failures("ONNX Runtime static quantization", nn.Module()):
        # shape inference and graph fusions (a conv with its BatchNorm) first, as ONNX Runtime recommends
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Batches(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"MatMulConstBOnly": True, "CalibPercentile": 99.99},
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return target


def torchao_int8(model: nn.Module, dynamic_activations: bool) -> nn.Module:
    """A copy of `model` with its Linear layers' weights in int8 (torchao's `quantize_`), their activations
    quantized per call too if `dynamic_activations`."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    if not any(isinstance(module, nn.Linear) for module in model.modules()):
        raise ExportError(f"torchao int8 applies to Linear layers; {type(model.net).__qualname__} has none")
    quantized = copy.deepcopy(model)
    config = Int8DynamicActivationInt8WeightConfig() if dynamic_activations else Int8WeightOnlyConfig()
    with naming_failures("torchao int8 quantization", model):
        quantize_(quantized, config)
    return quantized.eval()

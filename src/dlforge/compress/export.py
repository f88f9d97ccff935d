"""Exported forms of a model's forward pass (inputs -> logits, what the objective computes before its loss):
ONNX through the dynamo exporter and `torch.export` programs (.pt2), both with a dynamic batch dimension and
the source run's provenance embedded (ONNX `metadata_props`, a .pt2 extra file), and the runtimes that
run them again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlforge.errors import UserError

METADATA_KEY = "dlforge"  # the ONNX metadata_props key and the .pt2 extra file holding `provenance` as JSON
FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2"}


class ExportError(UserError):
    """A model (or one of its layers or ops) the exporter or a compression method cannot handle."""


def provenance(checkpoint: dict[str, Any], checkpoint_path: Path) -> dict[str, Any]:
    """What identifies the run a model came from: its id (W&B's, else its run dir's name), a hash of its
    resolved config, the DVC hash of its data, and the checkpoint."""
    lineage = checkpoint.get("lineage") or {}
    run_dir = lineage.get("run_dir") or str(checkpoint_path.resolve().parent.parent)
    config = json.dumps(checkpoint["run_config"], sort_keys=True, default=str)
    return {
        "run_id": (lineage.get("wandb") or {}).get("id") or Path(run_dir).name,
        "run_dir": run_dir,
        "checkpoint": str(checkpoint_path.resolve()),
        "config_hash": hashlib.sha256(config.encode()).hexdigest(),
        "data_hash": (lineage.get("data") or {}).get("md5"),
    }


def export_onnx(model: nn.Module, inputs: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """`model(inputs)` as ONNX (opset of the dynamo exporter), any batch size, `metadata` embedded."""
    with naming_failures("ONNX export", model):
        program = torch.onnx.export(
            model,
            (inputs,),
            dynamo=True,
            dynamic_shapes=({0: _batch_dim()},),
            input_names=["inputs"],
            output_names=["logits"],
            verbose=False,
        )
    batch = program.model.graph.inputs[0].shape[0]
    if isinstance(batch, int):  # the exporter falls back to the example's shape where it cannot keep the batch free
        raise ExportError(
            f"ONNX export failed for {_net_name(model)}: the exporter fixed the batch size at {batch}; "
            "its ops keep the batch dimension from being dynamic"
        )
    program.save(str(path))
    embed_onnx_metadata(path, metadata)
    return path


def embed_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    kept = [prop for prop in proto.metadata_props if prop.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata, default=str)})
    onnx.save(proto, str(path))


def export_program(model: nn.Module, inputs: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Path:
    """`model(inputs)` as a `torch.export` program (.pt2), any batch size, `metadata` embedded."""
    with naming_failures("torch.export", model):
        program = torch.export.export(model, (inputs,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(path), extra_files={METADATA_KEY: json.dumps(metadata, default=str)})
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata embedded by `export_onnx` or `export_program`."""
    if path.suffix == ".onnx":
        import onnx

        props = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    extra = {METADATA_KEY: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_KEY])


class OnnxForward:
    """An ONNX model run by ONNX Runtime on CPU, called like the module it came from (tensor in, tensor out, or
    a tuple of them where the module returns one: a CTC net's logits and frame counts)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = [
            torch.from_numpy(out) for out in self.session.run(None, {self.input_name: inputs.detach().cpu().numpy()})
        ]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def load_program(path: Path) -> nn.Module:
    """The module of a saved `torch.export` program."""
    return torch.export.load(str(path)).module()


def _batch_dim():
    # min=1: without it the exporter may specialise on the example's batch size being neither 0 nor 1
    return torch.export.Dim("batch", min=1)


@contextlib.contextmanager
def naming_failures(action: str, model: nn.Module):
    """Turn the multi-page error of an exporter or quantizer into one line naming the net, the op and the
    source line (the layer) it failed on."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the library raised, described in one line
        raise ExportError(f"{action} failed for {_net_name(model)}: {describe_failure(error)}") from error


def _net_name(model: nn.Module) -> str:
    net = getattr(model, "net", model)
    return f"{type(net).__module__}.{type(net).__qualname__}"


def describe_failure(error: BaseException) -> str:
    """The first line of an exporter's error, and the last line of user code it names (the layer)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(cause) for cause in _causes(error)))  # no terminal colours
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    ours = [frame for frame in frames if not frame[0].startswith(LIBRARIES)] or frames
    where = f" (at {Path(ours[-1][0]).name}:{ours[-1][1]}, in {ours[-1][2]})" if ours else ""
    return f"{type(error).__name__}: {first[:300]}{where}"


# where the exporters' own frames are: the line to name is the last one outside them (the model's)
_PACKAGES = Path(torch.__file__).parent.parent
LIBRARIES = tuple(str(_PACKAGES / name) + "/" for name in ("torch", "onnxscript", "onnx", "onnxruntime", "torchao"))


def _causes(error: BaseException):
    while error is not None:
        yield error
        error = error.__cause__

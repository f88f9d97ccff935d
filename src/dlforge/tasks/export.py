"""Export of a checkpoint's forward pass (ONNX or a torch.export program), verified before it is kept: the
exported model is run on the run's test split and must give the checkpoint's predictions, with logits
within `tolerance`, and so its test metrics; the file carries the source run's provenance and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from omegaconf import DictConfig

from dlforge.constraints import Positive


@dataclass
class ExportOptions:
    """The top-level keys of `conf/export.yaml` that are not config groups."""

    task_name: str
    ckpt_path: str
    format: Literal["onnx", "torch_export"]
    tolerance: Annotated[float, Positive]


def main(cfg: DictConfig) -> dict[str, float]:
    from dlforge.compress.export import ExportError
    from dlforge.compress.records import record_run
    from dlforge.compress.source import open_source
    from dlforge.config import primary_groups
    from dlforge.config.checks import check_fields, check_keys
    from dlforge.run.summary import print_summary

    check_keys(cfg, ExportOptions, primary_groups("export"))
    check_fields(cfg, ExportOptions)
    source = open_source(cfg)
    run, reference = source.run, source.reference
    path, check, exported = export_verified(
        cfg.format,
        run.model,
        run.datamodule,
        source.trainer,
        source.run_dir,
        {**source.provenance, "format": cfg.format, "metrics": reference},
    )
    if not check.holds(cfg.tolerance):
        path.unlink()
        raise ExportError(
            f"the {cfg.format} export differs from the checkpoint on the test split: max |logit difference| "
            f"{check.max_abs_diff:.3g} (tolerance {cfg.tolerance:g}), "
            f"{check.predictions - check.same_predictions} of {check.predictions} predictions differ; nothing kept"
        )
    metrics = {
        **{f"checkpoint/{name}": value for name, value in reference.items()},
        **{f"exported/{name}": value for name, value in exported.items()},
        "parity/max_abs_diff": check.max_abs_diff,
        "parity/agreement": check.agreement,
    }
    record_run(source.run_dir, cfg, source.overrides, source.trainer, source.provenance, metrics)
    print_summary(
        f"{cfg.format} export of {cfg.ckpt_path}", metrics, {"model": str(path), "run dir": str(source.run_dir)}
    )
    return metrics


def export_verified(format: str, model, datamodule, trainer, directory: Path, metadata: dict):
    """Export `model` in `format` to `directory`, load the file back, and measure it on the test split:
    (path, parity with `model`, test metrics of the exported model). The datamodule must be set up for test."""
    from dlforge.compress.export import FORMATS, OnnxForward, export_onnx, export_program, load_program
    from dlforge.compress.measure import parity, test_metrics

    inputs = next(iter(datamodule.test_dataloader()))[0]
    path = directory / FORMATS[format]
    if format == "onnx":
        export_onnx(model.eval(), inputs, path, metadata)
        forward = OnnxForward(path)
    else:
        export_program(model.eval(), inputs, path, metadata)
        forward = load_program(path)
    check = parity(model, forward, datamodule.test_dataloader())
    return path, check, test_metrics(trainer, model, datamodule, forward)

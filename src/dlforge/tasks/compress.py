"""Compression of a checkpoint: each method of the `compress` group makes a variant of the model (pruned,
structurally pruned, int8 in PyTorch or ONNX Runtime), and one report compares every variant with the fp32
checkpoint on the run's test split: test metric, parameters, file size raw and gzipped, latency at each
batch size and thread count, agreement of predictions and largest logit difference.

Pruned variants are saved as weights-only checkpoints in `<run dir>/variants/`, with their new widths in the
run config, so `load_run` (eval.py, export.py) rebuilds them; the source run is only read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from dlforge.constraints import Fraction, NonNegative, Positive

Method = Literal[
    "prune_unstructured",
    "prune_structured",
    "torchao_int8_weight_only",
    "torchao_int8_dynamic",
    "onnx_fp32",
    "onnx_dynamic_int8",
    "onnx_static_int8",
]
PRUNING = ("prune_unstructured", "prune_structured")
# What a checkpoint holds only to resume training; a compressed model cannot resume its source's training.
RESUME_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "exact_resume")


@dataclass
class CompressOptions:
    """The top-level keys of `conf/compress.yaml` that are not config groups."""

    task_name: str
    ckpt_path: str
    finetune_steps: Annotated[int, NonNegative]
    calibration_batches: Annotated[int, Positive]
    batch_sizes: list[int]
    threads: list[int]
    min_time: Annotated[float, Positive]
    rounds: Annotated[int, Positive]
    tolerance: Annotated[float, Positive]


@dataclass
class VariantOptions:
    """An entry of `compress.variants`."""

    method: Method
    amount: Optional[Annotated[float, Fraction]]  # pruning: the fraction removed; other methods: null


@dataclass
class Context:
    """What every variant is measured against and with."""

    cfg: DictConfig
    run: Any  # dlforge.run.load.LoadedRun: its model is the fp32 reference
    trainer: Any  # tests each variant through the objective's test step
    directory: Path  # where the variants' files go
    source: dict[str, Any]  # the source run's provenance
    inputs: dict[int, torch.Tensor]  # batch size -> test inputs timed at that size


def main(cfg: DictConfig) -> dict[str, Any]:
    from lightning.pytorch.loggers import WandbLogger

    from dlforge.compress.export import ExportError
    from dlforge.compress.records import record_run
    from dlforge.compress.report import markdown, print_table, table
    from dlforge.compress.source import open_source
    from dlforge.config import primary_groups
    from dlforge.config.build import build_named
    from dlforge.config.checks import check_fields, check_keys
    from dlforge.errors import ConfigError
    from dlforge.run.loggers import finish_wandb_run

    check_keys(cfg, CompressOptions, primary_groups("compress"))
    check_fields(cfg, CompressOptions)
    variants = [_checked_variant(variant, index) for index, variant in enumerate(cfg.compress.variants)]
    if not variants:
        raise ConfigError("compress.variants: empty; name at least one method")
    if any(size < 1 for size in cfg.batch_sizes) or any(count < 1 for count in cfg.threads):
        raise ConfigError(f"batch_sizes={list(cfg.batch_sizes)}, threads={list(cfg.threads)}: need positive numbers")
    source = open_source(cfg)
    run, trainer, run_dir = source.run, source.trainer, source.run_dir
    metric_name = run.model.default_monitor[0].replace("val/", "test/", 1)
    context = Context(
        cfg,
        run,
        trainer,
        run_dir / "variants",
        source.provenance,
        _timed_inputs(run.datamodule.test_dataloader(), cfg.batch_sizes),
    )
    context.directory.mkdir()
    fp32 = context.directory / "fp32.ckpt"
    _save_checkpoint(fp32, run, run.model.state_dict(), {}, {"method": "fp32"})
    measured = [_measure(context, "fp32 (checkpoint)", fp32, lambda threads: run.model, metric_name)]
    rows = [measured[0][0]]
    for method, amount in variants:
        try:
            measured.append(_variant(context, method, amount, metric_name))
            rows.append(measured[-1][0])
        except ExportError as error:
            # A method that does not apply stops a run of that method alone; in a report of several, its row says why.
            if len(variants) == 1:
                raise
            rows.append(_failed_row(method, amount, cfg.finetune_steps, str(error)))
    _time(context, measured)

    columns, cells = table(rows, metric_name, cfg.tolerance)
    (run_dir / "report.md").write_text(f"# compress {cfg.ckpt_path}\n\n" + markdown(columns, cells))
    metrics = {
        "source": context.source,
        "metric": metric_name,
        "reference": source.reference,
        "variants": [row.as_dict() for row in rows],
    }
    # The W&B run's config is the lineage record (as a training run's), its table the report.
    wandb = next((logger for logger in build_named(cfg.get("logger")) if isinstance(logger, WandbLogger)), None)
    try:
        if wandb is not None:
            wandb.log_table("compress/report", columns=columns, data=cells)
        record_run(run_dir, cfg, source.overrides, trainer, context.source, metrics, wandb)
    finally:
        finish_wandb_run()
    print_table(f"compress {cfg.ckpt_path}", columns, cells)
    print(f"report: {run_dir / 'report.md'}\nvariants: {context.directory}")
    return metrics


def _checked_variant(variant: DictConfig, index: int) -> tuple[str, float | None]:
    from dlforge.config.checks import check_fields
    from dlforge.errors import ConfigError

    where = f"compress.variants.{index}"
    unknown = sorted(set(variant) - {"method", "amount"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: not a key of a variant; allowed: amount, method")
    try:
        check_fields(variant, VariantOptions)
    except ConfigError as error:
        raise ConfigError(f"{where}.{error}") from error
    if (variant.amount is None) == (variant.method in PRUNING):
        needs = "needs an amount (0 < amount < 1)" if variant.method in PRUNING else "takes no amount"
        raise ConfigError(f"{where}: {variant.method} {needs}")
    return variant.method, variant.amount


def _variant_name(method: str, amount: float | None, finetune_steps: int) -> str:
    if method not in PRUNING:
        return method.replace("_", " ").replace("weight only", "weight-only")
    tuned = f", fine-tuned {finetune_steps} steps" if finetune_steps else ""
    return f"{method.replace('_', ' ')} {amount:.0%}{tuned}"


def _failed_row(method: str, amount: float | None, finetune_steps: int, error: str):
    from dlforge.compress.report import Row

    return Row(_variant_name(method, amount, finetune_steps), error=error)


def _variant(context: Context, method: str, amount: float | None, metric_name: str):
    """Make the variant and measure it: `_measure`'s (row, forward_for)."""
    from dlforge.compress.export import OnnxForward
    from dlforge.compress.quantize import onnx_dynamic_int8, onnx_static_int8, torchao_int8

    run, directory = context.run, context.directory
    name = _variant_name(method, amount, context.cfg.finetune_steps)
    file = directory / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if method in PRUNING:
        model, net_changes = _pruned(context, method, amount)
        path = file.with_suffix(".ckpt")
        details = {"method": method, "amount": amount, "finetune_steps": context.cfg.finetune_steps}
        _save_checkpoint(path, run, model.state_dict(), net_changes, details)
        return _measure(context, name, path, lambda threads: model, metric_name)
    if method.startswith("torchao"):
        model = torchao_int8(run.model, dynamic_activations=method == "torchao_int8_dynamic")
        path = file.with_suffix(".pt")
        torch.save(model.state_dict(), path)
        return _measure(context, name, path, lambda threads: model, metric_name)
    fp32 = _onnx_fp32(context)
    if method == "onnx_fp32":
        path = fp32
    elif method == "onnx_dynamic_int8":
        path = onnx_dynamic_int8(fp32, file.with_suffix(".onnx"))
    else:
        path = onnx_static_int8(fp32, file.with_suffix(".onnx"), _calibration_inputs(context))
    return _measure(context, name, path, lambda threads: OnnxForward(path, threads), metric_name)


def _onnx_fp32(context: Context) -> Path:
    """The fp32 ONNX export, made once per run (the int8 variants quantize it)."""
    from dlforge.compress.export import export_onnx

    path = context.directory / "onnx_fp32.onnx"
    if not path.exists():
        export_onnx(context.run.model.eval(), context.inputs[max(context.inputs)], path, context.source)
    return path


def _calibration_inputs(context: Context):
    """Validation inputs: the run's own data, never its test split."""
    datamodule = context.run.datamodule
    datamodule.setup("validate")
    for index, (inputs, *_) in enumerate(datamodule.val_dataloader()):
        if index == context.cfg.calibration_batches:
            return
        yield inputs


def _pruned(context: Context, method: str, amount: float):
    """(the pruned objective after its fine-tune, in eval mode; the changes to the net's config)."""
    from dlforge.compress.prune import prune_structured, prune_unstructured

    run = context.run
    if method == "prune_unstructured":
        model = _fine_tuned(
            context, run.config, run.model.state_dict(), lambda model: prune_unstructured(model, amount)
        )
        return model, {}
    state, net_changes = prune_structured(run.model, OmegaConf.to_container(run.config.model.net), amount)
    config = OmegaConf.merge(run.config, {"model": {"net": net_changes}})
    return _fine_tuned(context, config, state, lambda model: None), net_changes


def _fine_tuned(context: Context, config: DictConfig, state: dict, prune: Callable) -> Any:
    """The objective of `config` with the weights `state`, pruned by `prune` (masks kept on while it trains),
    fine-tuned for `finetune_steps` with the run's optimizer, schedule and training data, masks made permanent."""
    from lightning.pytorch import seed_everything

    from dlforge.compress.prune import make_permanent
    from dlforge.config.build import build_model, build_trainer

    model = build_model(config)
    model.load_state_dict(state)
    model.pretrained = None  # fine-tuning starts from these weights, not from those the run started from
    prune(model)
    if context.cfg.finetune_steps:
        seed_everything(config.get("seed", 0), verbose=False)
        trainer = build_trainer(
            context.cfg,
            callbacks=[],
            loggers=[],
            max_steps=context.cfg.finetune_steps,
            max_epochs=-1,
            limit_val_batches=0,
            enable_checkpointing=False,
            default_root_dir=str(context.directory.parent),  # the run dir: what Lightning writes goes there
        )
        trainer.fit(model, datamodule=context.run.datamodule)
    make_permanent(model)
    return model.eval()


def _measure(context: Context, name: str, path: Path, forward_for: Callable, metric_name: str):
    """A report row for the variant stored at `path` and run by `forward_for(threads)` (its latency comes
    later, from `_time`), and `forward_for`."""
    from dlforge.compress.measure import file_sizes, onnx_parameter_counts, parameter_counts, parity, test_metrics
    from dlforge.compress.report import Row

    run = context.run
    forward = forward_for(None)
    # the checkpoint's own row: its forward as it is (replaced by itself, it would call itself)
    metrics = test_metrics(context.trainer, run.model, run.datamodule, None if forward is run.model else forward)
    params, nonzero = onnx_parameter_counts(path) if path.suffix == ".onnx" else parameter_counts(forward)
    size, gzipped = file_sizes(path)
    row = Row(
        name,
        file=str(path),
        metric=metrics[metric_name],
        params=params,
        nonzero=nonzero,
        size_bytes=size,
        gzip_bytes=gzipped,
        parity=parity(run.model, forward, run.datamodule.test_dataloader()),
    )
    return row, forward_for


def _time(context: Context, measured: list[tuple[Any, Callable]]) -> None:
    """Each variant's latency at each setting, in `rounds` that time every variant in turn: a busy spell of
    a shared machine then slows all variants of a round instead of one. p50 and p90 are medians over rounds."""
    import statistics

    from dlforge.compress.measure import Latency, latency
    from dlforge.compress.report import SETTINGS

    cfg = context.cfg
    for threads in cfg.threads:
        forwards = [forward_for(threads) for _, forward_for in measured]  # an ONNX Runtime session per thread count
        for batch in cfg.batch_sizes:
            rounds = [
                [latency(forward, context.inputs[batch], threads, cfg.min_time) for forward in forwards]
                for _ in range(cfg.rounds)
            ]
            for (row, _), timings in zip(measured, zip(*rounds)):
                row.latency[SETTINGS.format(batch=batch, threads=threads)] = Latency(
                    statistics.median(timing.p50_ms for timing in timings),
                    statistics.median(timing.p90_ms for timing in timings),
                    sum(timing.calls for timing in timings),
                )


def _timed_inputs(batches, sizes: list[int]) -> dict[int, torch.Tensor]:
    """The first rows of the test split at each batch size (repeated if the split is smaller)."""
    rows, count = [], 0
    for inputs, *_ in batches:
        rows.append(inputs)
        count += len(inputs)
        if count >= max(sizes):
            break
    inputs = torch.cat(rows)
    inputs = inputs.repeat(-(-max(sizes) // len(inputs)), *[1] * (inputs.ndim - 1))
    return {size: inputs[:size].contiguous() for size in sizes}


def _save_checkpoint(path: Path, run, state_dict: dict, net_changes: dict, details: dict[str, Any]) -> None:
    """A weights-only checkpoint of a variant that `load_run` rebuilds: the source's run config with the
    variant's net changes, its data state (a tokenizer), and its lineage noting what was done to it."""
    from dlforge.compress.export import provenance
    from dlforge.files import replacing

    checkpoint = {key: value for key, value in run.checkpoint.items() if key not in RESUME_STATE}
    config = OmegaConf.merge(OmegaConf.create(run.checkpoint["run_config"]), {"model": {"net": net_changes}})
    checkpoint["run_config"] = OmegaConf.to_container(config)
    checkpoint["state_dict"] = {key: value.detach().clone().contiguous() for key, value in state_dict.items()}
    checkpoint["lineage"] = {
        **run.checkpoint.get("lineage", {}),
        "compressed": {**details, "source": provenance(run.checkpoint, run.path)},
    }
    with replacing(path) as file:
        torch.save(checkpoint, file)

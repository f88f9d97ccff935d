"""export.py and compress.py end to end, in this process as the scripts run them, from a short CNN run on
digits: the exported model reproduces the checkpoint on the whole test split and carries its provenance;
the compress report's variants are what it says they are; the source run is only read."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from conftest import compose, job_config
from dlforge.checkpoint_file import load_checkpoint
from dlforge.compress.export import ExportError, OnnxForward, export_program, load_program, read_metadata
from dlforge.run.load import load_run
from wandb_offline import offline_runs, read_offline_run


def run_task(task: str, module: str, log_dir: Path, *overrides: str):
    """`python src/<task>.py overrides...` in this process: (its result, its run dir)."""
    run_dir = log_dir / task
    run_dir.mkdir(parents=True)
    cfg = job_config(compose(task, [*overrides, f"paths.log_dir={log_dir}"], run_dir))
    return importlib.import_module(f"dlforge.tasks.{module}").main(cfg), run_dir


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory) -> Path:
    """The default CNN on digits, 2 short epochs: enough to tell a correct export from a wrong one."""
    from dlforge.tasks.train import train

    log_dir = tmp_path_factory.mktemp("cnn")
    run_dir = log_dir / "run"
    overrides = ["logger=none", "debug=limit_batches", "trainer.limit_test_batches=null", f"paths.log_dir={log_dir}"]
    train(job_config(compose("train", overrides, run_dir)))
    return run_dir / "checkpoints" / "best.ckpt"


def file_hashes(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its content hash: what must not change when a run is only read."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("format,file", [("onnx", "model.onnx"), ("torch_export", "model.pt2")])
def test_export_reproduces_the_checkpoint_and_embeds_its_provenance(format, file, cnn_checkpoint, tmp_path):
    source_run = cnn_checkpoint.parent.parent
    before = file_hashes(source_run)
    metrics, run_dir = run_task("export", "export", tmp_path, f"ckpt_path={cnn_checkpoint}", f"format={format}")

    assert metrics["parity/agreement"] == 1.0 and metrics["parity/max_abs_diff"] <= 1e-4
    assert metrics["exported/test/acc"] == metrics["checkpoint/test/acc"]
    assert metrics["exported/test/loss"] == pytest.approx(metrics["checkpoint/test/loss"], abs=1e-6)
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    checkpoint = load_checkpoint(cnn_checkpoint)
    metadata = read_metadata(run_dir / file)
    config = json.dumps(checkpoint["run_config"], sort_keys=True, default=str)
    assert metadata["run_id"] == source_run.name
    assert metadata["config_hash"] == hashlib.sha256(config.encode()).hexdigest()
    assert metadata["data_hash"] == checkpoint["lineage"]["data"]["md5"]
    assert metadata["metrics"]["test/acc"] == metrics["checkpoint/test/acc"]
    assert yaml.safe_load((run_dir / "lineage.yaml").read_text())["source"]["run_id"] == source_run.name

    # any batch size, not only the example's: the batch dimension is dynamic
    run = load_run(cnn_checkpoint)
    images = torch.randn(3, 1, 8, 8)
    exported = OnnxForward(run_dir / file) if format == "onnx" else load_program(run_dir / file)
    with torch.no_grad():
        torch.testing.assert_close(exported(images), run.model(images), rtol=0, atol=1e-4)
    assert file_hashes(source_run) == before  # the source run is only read


class DataDependentShape(nn.Module):
    def forward(self, inputs):
        return inputs[: int(inputs.sum() > 0) + 1]  # the output's length depends on the values


def test_a_model_that_cannot_be_exported_gets_one_line_naming_the_source_line(tmp_path):
    with pytest.raises(ExportError) as raised:
        export_program(DataDependentShape(), torch.ones(4, 2), tmp_path / "model.pt2", {})
    message = str(raised.value)
    assert message.startswith("torch.export failed for test_compress_tasks.DataDependentShape: ")
    assert "test_compress_tasks.py:" in message and "in forward" in message
    assert "\n" not in message
    assert not (tmp_path / "model.pt2").exists()


# Small settings: the report's structure and the variants' properties, not timings.
QUICK = ["finetune_steps=3", "batch_sizes=[1,4]", "threads=[1]", "min_time=0.001", "rounds=1", "calibration_batches=2"]


def test_compress_report_has_every_variant_and_its_checkpoints_reload(cnn_checkpoint, tmp_path):
    source_run = cnn_checkpoint.parent.parent
    before = file_hashes(source_run)
    metrics, run_dir = run_task("compress", "compress", tmp_path, f"ckpt_path={cnn_checkpoint}", "logger=none", *QUICK)

    rows = {row["variant"].split(",")[0]: row for row in metrics["variants"]}
    assert list(rows) == [
        "fp32 (checkpoint)",
        "prune unstructured 50%",
        "prune unstructured 80%",
        "prune structured 50%",
        "torchao int8 weight-only",
        "torchao int8 dynamic",
        "onnx fp32",
        "onnx dynamic int8",
        "onnx static int8",
    ]
    assert all(row["error"] is None for row in rows.values())
    assert all(set(row["latency"]) == {"b1/t1", "b4/t1"} for row in rows.values())
    report = (run_dir / "report.md").read_text()
    assert all(variant in report for variant in rows)
    assert metrics == json.loads((run_dir / "metrics.json").read_text())
    assert yaml.safe_load((run_dir / "lineage.yaml").read_text())["source"]["run_id"] == source_run.name

    fp32, onnx = rows["fp32 (checkpoint)"], rows["onnx fp32"]
    assert fp32["metric"] == metrics["reference"]["test/acc"]
    assert onnx["parity"]["agreement"] == 1.0 and onnx["parity"]["max_abs_diff"] <= 1e-4
    assert onnx["metric"] == fp32["metric"]
    assert rows["onnx static int8"]["size_bytes"] * 3 <= onnx["size_bytes"]  # int8 weights: a quarter, plus scales

    # Unstructured pruning zeroes that share of the Linear and Conv weights, and the fine-tune keeps them zero.
    pruned = load_checkpoint(rows["prune unstructured 80%"]["file"])["state_dict"]
    weights = [value for key, value in pruned.items() if key.endswith("weight") and value.ndim > 1]
    zeros = sum(int((weight == 0).sum()) for weight in weights) / sum(weight.numel() for weight in weights)
    assert zeros == pytest.approx(0.8, abs=0.005)

    # The structured checkpoint is smaller for real, loads weights-only, and eval reproduces the report's number.
    structured = rows["prune structured 50%"]
    assert structured["params"] * 1.5 <= fp32["params"]
    reloaded = load_run(structured["file"])
    assert list(reloaded.config.model.net.channels) != list(load_run(cnn_checkpoint).config.model.net.channels)
    evaluated, _ = run_task("eval", "evaluate", tmp_path / "eval", f"ckpt_path={structured['file']}", "logger=none")
    assert evaluated["test/acc"] == structured["metric"]
    assert file_hashes(source_run) == before


def test_a_vit_with_heads_pruned_is_a_weights_only_checkpoint_that_load_run_rebuilds(tmp_path):
    from dlforge.compress.measure import parameter_counts
    from dlforge.compress.prune import prune_structured
    from dlforge.config.build import build_model
    from dlforge.tasks.train import train

    train_dir = tmp_path / "vit"
    overrides = ["model=vit", "logger=none", "debug=limit_batches", f"paths.log_dir={tmp_path}"]
    train(job_config(compose("train", overrides, train_dir)))
    checkpoint = train_dir / "checkpoints" / "best.ckpt"
    overrides = [f"ckpt_path={checkpoint}", "compress=prune_structured", "logger=none", *QUICK, "finetune_steps=0"]
    metrics, _ = run_task("compress", "compress", tmp_path, *overrides)
    fp32, structured = metrics["variants"]

    saved = torch.load(structured["file"], map_location="cpu", weights_only=True)
    net = saved["run_config"]["model"]["net"]
    assert (net["heads"], net["head_dim"], net["mlp_ratio"]) == (2, 32, 1.0)  # of 4 heads of 128 / 4, ratio 2
    # each of the 4 blocks loses 2 heads' query/key/value rows (3 x 64 x 129) and output columns (64 x 128),
    # and 128 of its 256 MLP units (128 x 129 in, 128 x 128 out)
    assert fp32["params"] - structured["params"] == 4 * (3 * 64 * 129 + 64 * 128 + 128 * 129 + 128 * 128)

    source = load_run(checkpoint)
    state, changes = prune_structured(source.model, net, 0.5)
    in_memory = build_model(OmegaConf.merge(source.config, {"model": {"net": changes}}), for_training=False)
    in_memory.load_state_dict(state)
    reloaded = load_run(structured["file"]).model
    assert parameter_counts(reloaded)[0] == structured["params"]
    source.datamodule.setup("test")
    images = next(iter(source.datamodule.test_dataloader()))[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), in_memory.eval()(images), rtol=0, atol=0)


def test_the_report_is_a_wandb_table_and_the_wandb_config_names_the_source_run(cnn_checkpoint, tmp_path):
    overrides = [f"ckpt_path={cnn_checkpoint}", "compress=prune_structured", "logger.wandb.mode=offline", *QUICK]
    _, run_dir = run_task("compress", "compress", tmp_path, *overrides)
    (files,) = offline_runs(run_dir)
    run = read_offline_run(files)
    record = yaml.safe_load((run_dir / "lineage.yaml").read_text())
    assert run.finished and run.job_type == "compress"
    assert run.config["source"] == record["source"] and record["source"]["run_id"] == cnn_checkpoint.parent.parent.name
    assert run.summary["compress/report"]["_type"] == "table-file"


def test_a_method_that_does_not_apply_stops_a_run_of_it_with_one_line(tmp_path):
    from dlforge.tasks.train import train

    train_dir = tmp_path / "lstm"
    overrides = ["model=lstm_cls", "logger=none", "debug=limit_batches", f"paths.log_dir={tmp_path}"]
    train(job_config(compose("train", overrides, train_dir)))
    checkpoint = train_dir / "checkpoints" / "best.ckpt"
    with pytest.raises(ExportError) as raised:
        run_task("compress", "compress", tmp_path, f"ckpt_path={checkpoint}", "compress=prune_structured", *QUICK)
    assert str(raised.value).startswith("prune_structured does not apply to dlforge.nets.text.rnn.RNN: ")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["compress=prune_structured", "compress.amount=1.5"], "compress.variants.0.amount: 1.5 is out of range"),
        (
            ["compress=onnx_int8", "compress.variants.1.amount=0.5"],
            "compress.variants.1: onnx_dynamic_int8 takes no amount",
        ),
        (["compress.variants=[{method:prune_structured}]"], "compress.variants.0.amount: missing from the config"),
        (["compress.variants=[{method:quantize}]"], "compress.variants.0.method: 'quantize' is not allowed"),
    ],
)
def test_bad_compress_options_are_refused_before_anything_is_read(overrides, message, tmp_path):
    from dlforge.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_task("compress", "compress", tmp_path, f"ckpt_path={tmp_path / 'missing.ckpt'}", "logger=none", *overrides)

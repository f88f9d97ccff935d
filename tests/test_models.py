"""Every model of the config registry, found by globbing conf/ (timm's tests/test_models.py pattern): each
net of conf/model/net/ with each objective config of conf/model/ it fits, through a training step and a
weights-only save and load; each preset (the README's model names) with the debug options and precisions, and
each experiment that trains what no preset does, through a capped training run in this process (a case that would
repeat another's net, objective and data path is left out: see DEBUG_RUNS, BF16_RUNS). A new family gets this
coverage by adding its YAML files.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from conftest import (
    CONF_DIR,
    VALIDATE_EACH_EPOCH,
    compose,
    composition,
    config_options,
    job_config,
    objectives,
    presets,
    read_metrics,
    small_batches,
)
from dlforge.config.build import build_datamodule, build_model
from dlforge.config.checks import check_targets
from dlforge.objectives.base import missing_members
from dlforge.objectives.optim import param_groups

NETS = config_options("model/net")
OBJECTIVES = sorted(objectives().values())
PRESETS = [preset.name for preset in presets()]
DEBUG_OPTIONS = config_options("debug")
# Presets made for fine-tuning start from a run of a preset with the same net. Without a checkpoint one trains as
# the preset it extends (bert_cls as transformer_cls): capped runs take the others, and
# test_preset_fine_tunes_a_pretrained_run runs these from a checkpoint, in fp32 and bf16.
FINE_TUNING = [preset.name for preset in presets() if preset.fine_tuning]
FROM_SCRATCH = [name for name in PRESETS if name not in FINE_TUNING]
# Each preset with each debug option, in fp32, but for fast_dev_run, which every preset runs in bf16 below (its
# fp32 path is the other options'), the profiler (Lightning's, around the objective's hooks; no code of ours
# reacts to it), run once per objective: with another net it times the capped run that limit_batches makes, and
# overfit_batches (Lightning's loaders rebuilt without shuffling, validating on training batches: the data's
# loaders react to it, and the objective's validation), run once per objective and data: with another net it is
# the capped run that limit_batches makes.
SCRATCH = [preset for preset in reversed(presets()) if not preset.fine_tuning]
ONCE_PER = {
    "profiler": {preset.objective: preset.name for preset in SCRATCH}.values(),
    "overfit": {(preset.objective, preset.data): preset.name for preset in SCRATCH}.values(),
}
DEBUG_RUNS = [
    (model, debug)
    for model in FROM_SCRATCH
    for debug in DEBUG_OPTIONS
    if debug != "fast_dev_run" and model in ONCE_PER.get(debug, [model])
]
# bf16 autocast (emulated, slow, on CPUs without native bf16) once per net and objective as the presets configure
# them, and once per experiment that configures a net or loss another way that autocast reaches. The other
# experiments change data, sizes and budgets of a preset's net and objective: in bf16 they repeat its run.
BF16_RUNS = [f"model={name}" for name in FROM_SCRATCH] + [
    "experiment=pydoc_llama",  # the gpt net's llama arch: RMSNorm, rotary positions, SwiGLU
    "experiment=pydoc_lstm",  # the rnn net over right-padded token ids: embedding, packed bidirectional LSTM
    "experiment=scenes_unet",  # the segmentation objective's soft Dice loss
]


def experiment_choice(name: str, group: str) -> str:
    """The option of `group` an experiment picks: its own `override /<group>`, else that of the experiment it
    extends, else the default config's."""
    defaults = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml").get("defaults", [])
    own = [entry[f"override /{group}"] for entry in defaults if f"override /{group}" in entry]
    extended = [entry for entry in defaults if isinstance(entry, str) and entry != "_self_"]
    if own or extended:
        return own[0] if own else experiment_choice(extended[0], group)
    return composition([]).hydra.runtime.choices[group]


def trains(name: str) -> tuple[str, str, str]:
    """What an experiment trains: (objective, net, data), the first two its model preset's."""
    model = next(preset for preset in presets() if preset.name == experiment_choice(name, "model"))
    return model.objective, model.net, experiment_choice(name, "data")


# Experiments whose net, objective and data no preset combines (the others change a preset's sizes and budgets):
# one capped run each, in fp32, unless BF16_RUNS has it.
NEW_EXPERIMENTS = [
    name
    for name in config_options("experiment")
    if f"experiment={name}" not in BF16_RUNS
    and trains(name) not in {(preset.objective, preset.net, preset.data) for preset in presets()}
]
# A few steps and batches of whatever a debug option runs, so that each case takes seconds.
CAPS = [
    "trainer.max_epochs=1",
    *VALIDATE_EACH_EPOCH,
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
]


@functools.cache
def built_net(net: str) -> torch.nn.Module:
    """The net, built as the first preset that uses it builds it (once: composing costs ~0.5 s a config)."""
    builder = next(preset for preset in presets() if preset.net == net)
    return instantiate(composition([f"model={builder.name}"]).model.net)


def fits(objective: str, net: str) -> bool:
    """Whether the objective can train the net: the built net has every member of the objective's
    `net_contract`."""
    target = next(target for target, option in objectives().items() if option == objective)
    return not missing_members(built_net(net), get_object(target).net_contract)


def fitting_data(objective: str, net: str) -> str:
    """The data of a preset combining the two, else the objective's own default data."""
    paired = [preset.data for preset in presets() if (preset.objective, preset.net) == (objective, net)]
    return paired[0] if paired else composition([f"model={objective}"]).hydra.runtime.choices.data


PAIRS = [(objective, net) for objective in OBJECTIVES for net in NETS if fits(objective, net)]


def test_registry_pairs_every_net_and_objective():
    assert {net for _, net in PAIRS} == set(NETS), "a net that no objective trains"
    assert {objective for objective, _ in PAIRS} == set(OBJECTIVES), "an objective that trains no net"


@pytest.mark.parametrize("objective,net", PAIRS, ids=[f"{objective}-{net}" for objective, net in PAIRS])
def test_net_trains_under_objective_and_reloads_from_weights(objective, net, tmp_path: Path):
    overrides = [f"model={objective}", f"model/net={net}", f"data={fitting_data(objective, net)}"]
    cfg = compose(
        "train", [*overrides, *small_batches(*overrides), "logger=none", f"paths.log_dir={tmp_path}"], tmp_path / "run"
    )
    check_targets(job_config(cfg))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    model = build_model(cfg, for_training=False)
    before = {name: value.clone() for name, value in model.state_dict().items()}

    loss = model.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    no_gradient = [name for name, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_gradient, f"parameters without a finite gradient: {no_gradient}"
    instantiate(cfg.optimizer)(param_groups(model)).step()
    unchanged = [name for name, p in trainable.items() if torch.equal(p, before[name])]
    assert not unchanged, f"parameters the optimizer step left unchanged: {unchanged}"

    torch.save(model.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(1)  # other initial weights, which loading must replace
    reloaded = build_model(cfg, for_training=False)
    reloaded.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    model.eval()
    reloaded.eval()
    inputs = batch[:2] if objective == "contrastive" else batch[:1]  # a dual encoder takes images and texts
    with torch.no_grad():
        torch.testing.assert_close(reloaded.net(*inputs), model.net(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("model,debug", DEBUG_RUNS, ids=[f"{model}-{debug}" for model, debug in DEBUG_RUNS])
def test_preset_trains_with_debug_option(model, debug, tmp_path: Path):
    _train(tmp_path, f"model={model}", f"debug={debug}")


@pytest.mark.parametrize("config", BF16_RUNS)
def test_trains_in_bf16(config, tmp_path: Path):
    # bf16 with gradient clipping, as experiment=pydoc_gpt: Lightning refuses that with a fused AdamW unless told
    _train(tmp_path, config, "debug=fast_dev_run", "trainer.precision=bf16-mixed", "++trainer.gradient_clip_val=1.0")


@pytest.mark.parametrize("experiment", NEW_EXPERIMENTS)
def test_experiment_trains(experiment, tmp_path: Path):
    _train(tmp_path, f"experiment={experiment}", "debug=fast_dev_run")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("model", FINE_TUNING)
def test_preset_fine_tunes_a_pretrained_run(model, precision, pretrained_checkpoint, tmp_path: Path):
    preset = next(preset for preset in presets() if preset.name == model)
    checkpoint = pretrained_checkpoint(preset.net, preset.objective)
    _train(
        tmp_path,
        f"model={model}",
        f"model.pretrained={checkpoint}",
        "debug=fast_dev_run",
        f"trainer.precision={precision}",
        "++trainer.gradient_clip_val=1.0",
    )


@pytest.fixture(scope="module")
def pretrained_checkpoint(tmp_path_factory):
    """net, objective -> the best checkpoint of a short run of a preset training that net under another objective."""

    @functools.cache
    def checkpoint(net: str, objective: str) -> Path:
        pretraining = next(preset for preset in presets() if preset.net == net and preset.objective != objective)
        log_dir = tmp_path_factory.mktemp(pretraining.name)
        _train(log_dir, f"model={pretraining.name}", "debug=limit_batches")
        return log_dir / "run" / "checkpoints" / "best.ckpt"

    return checkpoint


def _train(log_dir: Path, *overrides: str) -> None:
    """Train as `python src/train.py overrides...` would, without a logger and capped, in this process, and
    check the outcome: a finite validation score (none under fast_dev_run, which saves no checkpoint) and
    finite test metrics."""
    from dlforge.tasks.train import train

    run_dir = log_dir / "run"
    capped = [*overrides, "logger=none", *CAPS, *small_batches(*overrides), f"paths.log_dir={log_dir}"]
    cfg = job_config(compose("train", capped, run_dir))
    best = train(cfg)
    assert cfg.trainer.get("fast_dev_run") or (best is not None and math.isfinite(best)), f"best score {best}"
    metrics = read_metrics(run_dir)
    scores = [value for name, value in metrics.items() if name.startswith("test/") and isinstance(value, float)]
    assert scores and all(math.isfinite(value) for value in scores), metrics  # a detector's has no test/loss
    assert 0 <= metrics.get("test/acc", 0) <= 1


# Each net with a preset that trains it from scratch under an objective whose forward maps inputs to logits (the
# masked LM's also takes the positions to predict: it is not what export.py ships; a detector's gives a list of
# detections per image; a dual encoder's takes images and texts; a seq2seq net's output is a search over many
# decoder calls, which export.py does not ship).
EXPORTED_NETS = {
    preset.net: preset
    for preset in reversed(presets())
    if preset.name not in FINE_TUNING and preset.objective not in ("masked_lm", "detection", "contrastive", "seq2seq")
}


# What the exporters refuse, with the start of the one line that says why (a net that becomes exportable must be
# taken off this list, or the test fails).
RNN, TRANSFORMER_XL = "dlforge.nets.text.rnn.RNN", "dlforge.nets.text.transformer_xl.TransformerXL"
NOT_EXPORTABLE = {
    # LSTM/GRU over packed sequences: lengths read from the data fix the batch size while tracing
    ("rnn", "torch_export"): f"torch.export failed for {RNN}: UserError: Constraints violated (batch)",
    ("rnn", "onnx"): f"ONNX export failed for {RNN}: the exporter fixed the batch size at ",
    # torch 2.14's ONNX decomposition turns the merge of attention heads into a view of a non-contiguous tensor
    ("transformer_xl", "onnx"): f"ONNX export failed for {TRANSFORMER_XL}: ConversionError",
}


# The ONNX exporter unrolls a GRU into one cell per frame of the example: a speech net's example is cut to 0.25 s
# (9 frames after its convolutions), the graph the same but for how many cells it repeats.
EXAMPLE_SAMPLES = {"conv_bigru": 4000}


@pytest.mark.parametrize("net", sorted(EXPORTED_NETS))
def test_net_exports_to_onnx_and_torch_export_with_a_dynamic_batch(net, tmp_path: Path):
    """What `export.py` ships, for every net: the objective's forward pass as ONNX (dynamo exporter) and as a
    torch.export program, both giving the module's logits at a batch size other than the example's; or, where
    an exporter refuses the net, one line naming it."""
    from dlforge.compress.export import ExportError, OnnxForward, export_onnx, export_program, load_program

    preset = EXPORTED_NETS[net]
    overrides = [f"model={preset.name}", "logger=none", f"paths.log_dir={tmp_path}"]
    cfg = compose("train", [*overrides, *small_batches(*overrides)], tmp_path / "run")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    inputs = next(iter(datamodule.train_dataloader()))[0][..., : EXAMPLE_SAMPLES.get(net)]
    model = build_model(cfg, for_training=False).eval()
    other_batch = inputs[: min(3, len(inputs) - 1)]  # smaller than the example, which may be a batch of 2 (speech)
    with torch.no_grad():
        expected = model(other_batch)
    exporters = {
        "torch_export": lambda: load_program(export_program(model, inputs, tmp_path / "model.pt2", {})),
        "onnx": lambda: OnnxForward(export_onnx(model, inputs, tmp_path / "model.onnx", {})),
    }
    for format, export in exporters.items():
        if (net, format) in NOT_EXPORTABLE:
            with pytest.raises(ExportError) as raised:
                export()
            assert str(raised.value).startswith(NOT_EXPORTABLE[net, format]) and "\n" not in str(raised.value)
            continue
        exported = export()
        with torch.no_grad():
            torch.testing.assert_close(exported(other_batch), expected, rtol=0, atol=1e-4)

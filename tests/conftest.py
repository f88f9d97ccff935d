"""Shared helpers: compose configs like the scripts do, read the config registry (the options in conf/),
and run the scripts as a user would."""

from __future__ import annotations

import functools
import json
import logging
import os
import runpy
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# One intra-op thread per process: the two xdist workers (and the scripts they start) already fill the two
# cores, and torch's OpenMP threads spin-waiting on cores that others hold made a default CNN run 6x slower
# (157 s with two threads against 25 s with one, measured side by side on this loaded machine). Set before
# torch is imported; the scripts the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def compose(config_name: str, overrides: list[str], output_dir: Path):
    """The config `src/<config_name>.py` would run with, outside a Hydra app (hydra node included)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from dlforge.run.rundir import register_resolvers

    register_resolvers()  # as cli.run does: conf/hydra/default.yaml names run dirs with them
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name,
            # a run gets paths.output_dir from Hydra through DLFORGE_RUN_DIR (conf/paths/default.yaml)
            overrides=[*overrides, f"hydra.runtime.output_dir={output_dir}", f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def job_config(cfg):
    """A composed config without its `hydra` node: what the task gets."""
    from omegaconf import OmegaConf

    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def config_options(group: str) -> list[str]:
    """The options of a config group: its YAML files (`group` may be nested, as `model/net`)."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def composition(overrides: list[str]):
    """`train` composed with `overrides`, unresolved, with the Hydra node (its runtime choices). Composed once per
    process for the same overrides (a composition takes ~0.3 s; collecting the tests asks for some many times over):
    read it, don't change it."""
    return _composition(tuple(overrides))


@functools.cache
def _composition(overrides: tuple[str, ...]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=True)


@functools.cache
def objectives() -> dict[str, str]:
    """The objective configs of conf/model/ (those naming a `_target_` themselves): target -> option."""
    from omegaconf import OmegaConf

    configs = {option: OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml") for option in config_options("model")}
    return {config._target_: option for option, config in configs.items() if "_target_" in config}


@dataclass(frozen=True)
class Preset:
    """A model option that combines an objective with a net and the data it trains on by default."""

    name: str
    objective: str
    net: str
    data: str
    datamodule: str  # the data's `_target_`
    # made for fine-tuning (its own file sets `pretrained`): without a checkpoint it trains as the preset it extends
    fine_tuning: bool


@functools.cache
def presets() -> tuple[Preset, ...]:
    """The model options that are not objective configs: the README's model names."""
    from omegaconf import OmegaConf

    found = []
    for name in config_options("model"):
        if name not in objectives().values():
            cfg = composition([f"model={name}"])
            choices = cfg.hydra.runtime.choices
            objective, net = objectives()[cfg.model._target_], choices["model/net"]
            fine_tuning = "pretrained" in OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
            found.append(Preset(name, objective, net, choices.data, cfg.data._target_, fine_tuning))
    return tuple(found)


# A training step on 128-pixel scenes (per-sample loading, dense targets) costs what hundreds of digits steps
# do, and bf16 convolutions are emulated ~20x slower on CPUs without native bf16: capped test runs of the
# dense vision models take a few scenes a batch, read in the training process.
DENSE_TEST_BATCHES = ["data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0"]
# Of the generated scenes a few per split (written once beside the default set, which takes a fresh clone half a
# minute to make); a scene is drawn from its own seed, so these are the default set's first ones.
FEW_TEST_SCENES = ["data.source.train=16", "data.source.val=8", "data.source.test=8"]
# Validation at the end of every epoch, for capped runs of presets that validate every n optimizer steps.
VALIDATE_EACH_EPOCH = ["trainer.val_check_interval=null", "trainer.check_val_every_n_epoch=1"]


# The synthesised speech sets cost minutes to make whole: capped test runs read one voice per split (made in
# seconds, beside the full set), in the training process, at least two batches an epoch (so a resume test can
# stop one mid-epoch).
SPEECH_TEST_DATA = {
    "dlforge.data.audio.KeywordData": [
        "data.source.voices_per_split=1",
        "data.source.renditions=1",
        "data.batch_size=8",
    ],
    "dlforge.data.audio.TranscriptData": [
        "data.source.voices_per_split=1",
        "data.source.utterances=4",
        "data.batch_size=2",
    ],
}
# Captioned images: batches of 8; of the captioned scenes a few (written once beside the default set) and a few
# zero-shot and probe images, not thousands.
CAPTION_TEST_BATCHES = ["data.batch_size=8", "data.eval_batch_size=8"]
SCENE_CAPTION_TEST_BATCHES = [
    *CAPTION_TEST_BATCHES,
    "data.source.train=32",
    "data.source.val=16",
    "data.source.test=16",
    "data.zero_shot_val=16",
    "data.zero_shot_test=16",
    "data.probe_train=64",
]
# Video clips cost what scenes do; moving Fashion-MNIST made at its full size would write 9,000 clips (280 MB).
MOVING_TEST_CLIPS = ["data.source.train=64", "data.source.val=16", "data.source.test=16"]

# Testing a translation model decodes every test pair greedily and with beam search, to the length limit while
# the model is untrained: capped test runs of the seq2seq models take a few short pairs a batch. Setting a corpus
# up trains its BPE tokenizer on every training pair (~10 s for 20k), and number phrases are made with num2words
# when prepared (~10 s for the default 21,500): tests take the first few hundred pairs, a small vocabulary and
# few phrases.
PARALLEL_TEST_BATCHES = ["data.batch_size=8", "data.eval_batch_size=8", "data.max_length=16"]
PARALLEL_TEST_BATCHES += ["data.max_pairs=256", "data.vocab_size=300"]
NUMBER_PHRASES_TEST_SIZES = ["data.source.train_size=256", "data.source.val_size=16", "data.source.test_size=16"]


def small_batches(*overrides: str) -> list[str]:
    """Small data for capped test runs of what `overrides` compose: `DENSE_TEST_BATCHES` for dense vision and
    video data (with few scenes and moving clips), a few voices of synthesised speech, a few captioned images, a
    few short sentence pairs; else nothing. Only the overrides that choose a data, model or experiment option
    decide it, so one composition serves every run of a preset (whatever its debug option, precision or sizes)."""
    choosing = [item for item in overrides if item.partition("=")[0].lstrip("+~").split("/")[0] in DATA_CHOOSERS]
    data = composition(choosing).data
    if data._target_ in SPEECH_TEST_DATA:
        return [*SPEECH_TEST_DATA[data._target_], "data.eval_batch_size=8", "data.num_workers=0"]
    if data._target_.startswith("dlforge.data.captions."):
        scenes = data.source._target_.endswith(".CaptionedScenes")
        return SCENE_CAPTION_TEST_BATCHES if scenes else CAPTION_TEST_BATCHES
    if data._target_ == "dlforge.data.video.VideoClassificationData":
        return [
            *DENSE_TEST_BATCHES,
            *(MOVING_TEST_CLIPS if data.source._target_.endswith(".MovingFashionMNIST") else []),
        ]
    if data._target_ == "dlforge.data.parallel.ParallelData":
        numbers = data.source._target_ == "dlforge.data.sources.parallel.NumberPhrases"
        return PARALLEL_TEST_BATCHES + (NUMBER_PHRASES_TEST_SIZES if numbers else [])
    if not data._target_.startswith("dlforge.data.dense."):
        return []
    scenes = data.source._target_ == "dlforge.data.sources.scenes.Scenes"
    return DENSE_TEST_BATCHES + (FEW_TEST_SCENES if scenes else [])


DATA_CHOOSERS = ("data", "model", "experiment")  # the config groups whose options pick the data (model/net too)


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script the tests start: the logger config decides W&B's mode, and no W&B service
    that an in-process test started here is shared (it would keep a killed run's id "in use" for a resume)."""
    inherited = {name: value for name, value in os.environ.items() if name != "WANDB_SERVICE"}
    return {**inherited, "WANDB_MODE": "", **extra}


def run_script(script: str, *overrides: str, log_dir: Path, env: dict | None = None, timeout: int = 600):
    """Run `python src/<script>.py overrides...` with run dirs under `log_dir`; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / f"{script}.py"), f"paths.log_dir={log_dir}", *overrides],
        cwd=ROOT,
        env=script_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_in_process(capsys):
    """`run_script` without a new interpreter, which spends ~6 s importing torch and Lightning: `src/<script>.py`
    run as `__main__` here, its `sys.exit` status as the return code and its output captured. `sys.argv`, the
    environment (cli.run and Hydra's env_set write to it), Hydra's global state and the root logger's handlers
    (Hydra adds a run dir log file) are put back after. The exit path of a real process is `run_script`'s test."""
    from hydra.core.global_hydra import GlobalHydra

    def run_script_here(script: str, *overrides: str, log_dir: Path) -> subprocess.CompletedProcess:
        argv = [str(ROOT / "src" / f"{script}.py"), f"paths.log_dir={log_dir}", *overrides]
        saved_argv, saved_environ = sys.argv, dict(os.environ)
        root = logging.getLogger()
        saved_handlers, saved_level = list(root.handlers), root.level
        capsys.readouterr()
        sys.argv, returncode = list(argv), 0
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as stop:
            returncode = stop.code if isinstance(stop.code, int) else 1
        finally:
            sys.argv = saved_argv
            os.environ.clear()
            os.environ.update(saved_environ)
            GlobalHydra.instance().clear()
            for handler in set(root.handlers) - set(saved_handlers):
                handler.close()
            root.handlers[:], root.level = saved_handlers, saved_level
        output = capsys.readouterr()
        return subprocess.CompletedProcess(argv, returncode, output.out, output.err)

    return run_script_here


def when_saved(process: subprocess.Popen, checkpoint: Path) -> None:
    """Wait until the training `process` has written `checkpoint`."""
    while not checkpoint.exists():
        assert process.poll() is None, f"training ended before {checkpoint.name}:\n{process.stdout.read()[-3000:]}"
        time.sleep(0.002)


def run_dirs(log_dir: Path, task_name: str = "train") -> list[Path]:
    return sorted((log_dir / task_name / "runs").glob("*"))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def identical(a, b) -> bool:
    """Bit for bit: tensors of the same dtype and values, nested in dicts, lists and tuples alike."""
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup` the tests that use a module fixture (a training run, a DVC repo, a server) run on
    one worker, which builds it once; the other tests are handed out one by one. The group is named in the test id
    as xdist does for an `xdist_group` mark, which pytest 9's structured ids (`_id`, not `_nodeid`) lose."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers under --dist loadgroup
        return
    for item in items:
        if any(definitions[-1].scope == "module" for definitions in item._fixtureinfo.name2fixturedefs.values()):
            grouped = f"{item.nodeid}@{item.nodeid.split('::')[0]}"  # its module
            if hasattr(item, "_id"):
                item._id = type(item._id).parse(grouped)
            else:
                item._nodeid = grouped

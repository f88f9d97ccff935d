"""Benchmarks: the pipeline against a minimal hand-written PyTorch loop and this machine's limits.

    python -m bench.run            # everything; writes BENCHMARKS.md (about 5 minutes)
    python -m bench.run --quick    # overhead ratios of cnn and gpt at fp32 (about 1 minute): run before a change lands
    python -m bench.run --data-wait  # data wait of each loading path, 0/1/2 workers, CNN and ViT (into BENCHMARKS.md)
    python -m bench.run --scale    # a shard set of several GB from a cold page cache, GPT on a 50 MB and a 2 GB
                                   # token stream, DDP 2 processes against 1 (into BENCHMARKS.md); --scratch DIR
    python -m bench.run --report-cost  # share of a default run spent on its curves, media and report.html, printed
    python -m bench.run --startup  # seconds to the first optimizer step, beside raw PyTorch's (into BENCHMARKS.md)

Speeds drift between periods on these machines, so every comparison is made in one process: the raw
loop runs before and after each measured run, the run is divided by the mean of those two (a drift
then cancels), and the figures are the median (min-max) of the repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from lightning.pytorch import LightningModule  # noqa: E402
from torch import nn  # noqa: E402

from bench.timing import DataClock, FirstStepClock, HookClock, StepTimer  # noqa: E402
from dlforge.objectives.optim import param_groups  # noqa: E402
from dlforge.runtime import tune_process  # noqa: E402

MODELS = {  # name -> overrides of the default experiment
    "cnn": ["model=cnn"],
    "vit": ["model=vit"],
    "gpt": ["model=gpt"],
}
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def compose(overrides: list[str], output_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    os.environ.setdefault("DLFORGE_ROOT", str(ROOT))
    os.environ["DLFORGE_RUN_DIR"] = str(output_dir)  # what Hydra's job.env_set does in a real run
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            "train", overrides=[*overrides, f"hydra.runtime.output_dir={output_dir}"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the task sees the job config alone, as under @hydra.main
        del cfg["hydra"]
    return cfg


def pipeline_rate(overrides: list[str], warmup: int, steps: int) -> tuple[float, float]:
    """Optimizer steps/s of `dlforge.tasks.train.train` (what src/train.py runs) and its share of data wait."""
    from dlforge.tasks.train import train

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose(
            [
                *overrides,
                "logger=none",
                "test=false",
                "trainer.max_epochs=1000",
                "+callbacks.bench_timer._target_=bench.timing.StepTimer",
                f"+callbacks.bench_timer.warmup_steps={warmup}",
                f"+callbacks.bench_timer.measure_steps={steps}",
                f"paths.log_dir={run_dir}",
            ],
            Path(run_dir) / "run",
        )
        train(cfg)
    result = StepTimer.result
    return result["steps"] / result["seconds"], result["data_seconds"] / result["seconds"]


class BareLightning(LightningModule):
    """The raw loop's network, loss, optimizer and schedule as a LightningModule and nothing more."""

    def __init__(self, cfg, total_steps: int):
        super().__init__()
        self.cfg, self.total_steps = cfg, total_steps
        self.model, _ = _raw_network(cfg)

    def training_step(self, batch, batch_idx):
        return _raw_loss(self.model, *batch)

    def configure_optimizers(self):
        optimizer, scheduler = _raw_optimizer(self.cfg, self.model, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lightning_rate(overrides: list[str], warmup: int, steps: int) -> float:
    """Optimizer steps/s of BareLightning in a Trainer with everything optional off (metrics, logging,
    callbacks, checkpoints, progress bar, validation), fed by the pipeline's data loader: the cost of
    Lightning's loop itself, below which the pipeline cannot go."""
    from lightning.pytorch import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose([*overrides, f"paths.log_dir={run_dir}"], Path(run_dir) / "run")
        torch.manual_seed(cfg.seed)
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            precision=cfg.trainer.precision,
            max_epochs=1000,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[StepTimer(warmup, steps)],
            default_root_dir=run_dir,
        )
        datamodule = _fit_data(cfg)
        trainer.fit(BareLightning(cfg, total_steps=warmup + steps + 1), train_dataloaders=datamodule.train_dataloader())
    result = StepTimer.result
    return result["steps"] / result["seconds"]


def _fit_data(cfg):
    from dlforge.config.build import build_datamodule

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _raw_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(inputs).flatten(0, -2).float(), targets.flatten())


def _raw_optimizer(cfg, model: nn.Module, total_steps: int):
    optimizer = instantiate(cfg.optimizer)(param_groups(model))
    return optimizer, instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)


def _raw_network(cfg) -> tuple[nn.Module, bool]:
    """The configured network, with the classifier's linear head for image models."""
    net = instantiate(cfg.model.net)
    language_model = "vocab_size" in cfg.model.net
    return (
        net if language_model else nn.Sequential(net, nn.Linear(net.out_features, cfg.data.num_classes))
    ), language_model


def raw_rate(overrides: list[str], warmup: int, steps: int, device: str = "cpu", compile: bool = False) -> float:
    """Optimizer steps/s of a minimal loop: same network, data in memory, batch size, optimizer,
    schedule, precision and threads; no framework. `compile`: the network through torch.compile."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose([*overrides, f"paths.log_dir={run_dir}"], Path(run_dir) / "run")
        torch.manual_seed(cfg.seed)
        datamodule = _fit_data(cfg)
        model, language_model = _raw_network(cfg)
        model.to(device)
        if compile:
            model.compile()
        optimizer, scheduler = _raw_optimizer(cfg, model, total_steps=warmup + steps + 1)
        batches = _lm_batches(datamodule, cfg) if language_model else _image_batches(datamodule, cfg)
        bf16 = cfg.trainer.precision == "bf16-mixed"
        return loop_rate(model, batches, optimizer, scheduler, warmup, steps, device, bf16)


def loop_rate(model: nn.Module, batches, optimizer, scheduler, warmup: int, steps: int, device: str, bf16: bool):
    """Steps/s of the plain training loop over `batches` ((inputs, targets), or (None, None) at an epoch's end,
    which no timed interval spans), on `device`, in bf16 autocast if `bf16`: `steps` steps after `warmup`."""
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    model.train()
    intervals, last_end = [], None
    for step, (inputs, targets) in enumerate(batches):
        if inputs is None:  # epoch boundary: intervals never span one, as in the pipeline's timer
            last_end = None
            continue
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            loss = _raw_loss(model, inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        synchronize()
        now = time.perf_counter()
        if last_end is not None and len(intervals) < steps and step > warmup:
            intervals.append(now - last_end)
        last_end = now
        if len(intervals) >= steps:
            return len(intervals) / sum(intervals)
    raise AssertionError("unreachable: the batch generators are endless")


def _image_batches(datamodule, cfg):
    images, labels = datamodule.splits["train"].tensors
    while True:
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), cfg.data.batch_size):
            index = order[start : start + cfg.data.batch_size]
            yield images[index], labels[index]
        yield None, None


def _lm_batches(datamodule, cfg):
    stream = torch.from_numpy(datamodule.streams["train"].astype("int64"))
    block, batch = cfg.data.block_size, cfg.data.batch_size
    offsets = torch.arange(block + 1)
    while True:
        for _ in range(cfg.data.batches_per_epoch):
            windows = stream[torch.randint(len(stream) - block - 1, (batch, 1)) + offsets]
            yield windows[:, :-1], windows[:, 1:]
        yield None, None


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def overhead(
    models: list[str], precisions: list[str], repeats: int, warmup: int, steps: dict[str, int], bare: bool = True
) -> list[dict]:
    rows = []
    for model in models:
        for precision in precisions:
            overrides = [*MODELS[model], f"trainer.precision={PRECISIONS[precision]}"]
            raw, lightning, piped, waits = [raw_rate(overrides, warmup, steps[model])], [], [], []
            for _ in range(repeats):
                if bare:
                    lightning.append(lightning_rate(overrides, warmup, steps[model]))
                rate, wait = pipeline_rate(overrides, warmup, steps[model])
                piped.append(rate)
                waits.append(wait)
                raw.append(raw_rate(overrides, warmup, steps[model]))
            around = [(before + after) / 2 for before, after in zip(raw, raw[1:])]  # the raw runs either side
            row = {
                "model": model,
                "precision": precision,
                "raw": raw,
                "pipeline": piped,
                "data_wait": waits,
                "ratio": [p / r for p, r in zip(piped, around)],
                "lightning": lightning,
                "lightning_ratio": [b / r for b, r in zip(lightning, around)],
            }
            rows.append(row)
            floor = f", bare Lightning/raw {spread(row['lightning_ratio'])}" if bare else ""
            print(
                f"{model:4} {precision}: pipeline/raw {spread(row['ratio'])}{floor}, data wait {spread(waits)}",
                flush=True,
            )
    return rows


SHOWING = ("MetricCurves", "MediaLogger")  # the callbacks every run gets so that it can be looked at (report.html)


def report_cost(repeats: int) -> list[dict]:
    """What showing a run costs in the default run (`python src/train.py`: the CNN on digits, 20 epochs, the
    default logger): the seconds in every hook of MetricCurves and MediaLogger (timed by Lightning's profiler,
    which wraps each hook of each callback; media drawn and given to the loggers included) and in writing
    report.html, against the wall time of `train(cfg)` in this process (the imports before it excluded, so the
    share is if anything overstated)."""
    import dlforge.run.training as training
    from dlforge.tasks.train import train

    write_run_report = training.write_run_report
    rows = []
    for _ in range(repeats):
        report_seconds = []

        def timed(run_dir, write=write_run_report, seconds=report_seconds):
            started = time.perf_counter()
            try:
                return write(run_dir)
            finally:
                seconds.append(time.perf_counter() - started)

        training.write_run_report = timed
        try:
            with tempfile.TemporaryDirectory() as log_dir:
                overrides = ["+trainer.profiler._target_=bench.timing.HookClock", f"paths.log_dir={log_dir}"]
                cfg = compose(overrides, Path(log_dir) / "run")
                started = time.perf_counter()
                train(cfg)
                wall = time.perf_counter() - started
        finally:
            training.write_run_report = write_run_report
        row = {"wall": wall, "report.html": sum(report_seconds)}
        for callback in SHOWING:
            hooks = [
                seconds
                for action, seconds in HookClock.durations.items()
                if action.startswith(f"[Callback]{callback}.")
            ]
            row[callback] = sum(map(sum, hooks))
        row["share"] = (row["report.html"] + sum(row[callback] for callback in SHOWING)) / wall
        rows.append(row)
        print(", ".join(f"{key} {value:.4g}" for key, value in row.items()), flush=True)
    return rows


def matplotlib_comes_with_lightning() -> bool:
    """Whether importing Lightning alone (in a fresh process) imports matplotlib's figures (torchmetrics does)."""
    check = "import sys, lightning.pytorch; print('matplotlib.figure' in sys.modules)"
    return (
        subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip()
        == "True"
    )


def report_cost_lines(rows: list[dict], matplotlib_preloaded: bool, load: str) -> list[str]:
    imported = (
        "Lightning imports matplotlib (through torchmetrics) before any of dlforge's code: no import cost of its own."
        if matplotlib_preloaded
        else "Lightning does not import matplotlib here: its import (not counted) adds to the cost."
    )
    lines = [
        "## Showing a run: curves, media and report.html in the default run",
        "",
        "`python src/train.py` (CNN on digits, 20 epochs, default logger): seconds in every hook of `MetricCurves`",
        "and `MediaLogger` (Lightning's profiler; drawing the confusion matrix and sample digits and handing them to",
        "the loggers included) and in writing `report.html`, as a share of the run's wall time (`train()` in one",
        f"process, imports excluded). {imported}",
        f"Measured {datetime.date.today()} on {_cpu_model()}; load average at the end {load}.",
        "",
        "| run wall s | MetricCurves s | MediaLogger s | report.html s | share of the run |",
        "|---|---|---|---|---|",
    ]
    column = lambda key: spread([row[key] for row in rows])  # noqa: E731
    lines.append(
        f"| {column('wall')} | {column('MetricCurves')} | {column('MediaLogger')} | {column('report.html')} "
        f"| {spread([100 * row['share'] for row in rows])} % |"
    )
    return lines


def load_average() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg()) + f" (1, 5, 15 min) on {os.cpu_count()} cores"


def wall_seconds(command: list[str], repeats: int, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - started)
    return times


# The floor under any training script's start: import torch, then one AdamW step of a small CNN on a batch of
# digits-sized images (its first step imports torch._dynamo, which torch.optim's step needs).
RAW_FIRST_STEP = """
import sys, time
import torch
from torch import nn

net = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
)
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
nn.functional.cross_entropy(net(torch.randn(64, 1, 8, 8)), torch.randint(10, (64,))).backward()
optimizer.step()
open(sys.argv[1], "w").write(repr(time.time()))
"""
RAW_AFTER_LIGHTNING = "import lightning" + RAW_FIRST_STEP  # what Lightning's import (torchmetrics with it) adds


def train_first_step(extra: list[str], marker: Path) -> list[str]:
    """The default experiment's command that writes the time its first optimizer step ends to `marker`."""
    return [
        sys.executable,
        "src/train.py",
        f"paths.log_dir={marker.parent}",
        "test=false",
        *extra,
        f"+callbacks.first_step._target_={FirstStepClock.__module__}.FirstStepClock",
        f"+callbacks.first_step.path={marker}",
    ]


RAW_FLOOR = "raw: import torch, first AdamW step"
FIRST_STEP_COMMANDS = {
    RAW_FLOOR: lambda marker: [sys.executable, "-c", RAW_FIRST_STEP, str(marker)],
    "raw, importing lightning first": lambda marker: [sys.executable, "-c", RAW_AFTER_LIGHTNING, str(marker)],
    "first optimizer step (logger=none)": lambda marker: train_first_step(["logger=none"], marker),
    "first optimizer step (default experiment)": lambda marker: train_first_step([], marker),
}


def first_step_seconds(repeats: int) -> dict[str, list[float]]:
    """From process start to the end of the first optimizer step, for each of `FIRST_STEP_COMMANDS`, taken in
    turns so that the machine's drift falls on all of them alike."""
    times = {name: [] for name in FIRST_STEP_COMMANDS}
    for _ in range(repeats):
        for name, command in FIRST_STEP_COMMANDS.items():
            with tempfile.TemporaryDirectory() as tmp:
                marker = Path(tmp) / "first_step"
                started = time.time()
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                subprocess.run(command(marker), cwd=ROOT, check=True, capture_output=True, env=env)
                times[name].append(float(marker.read_text()) - started)
    return times


def startup_seconds() -> dict[str, list[float]]:
    python = sys.executable
    return {
        "train.py --help": wall_seconds([python, "src/train.py", "--help"], 5),
        "train.py --cfg job": wall_seconds([python, "src/train.py", "--cfg", "job"], 5),
        **first_step_seconds(repeats=3),
    }


def startup_lines(times: dict[str, list[float]], load: str) -> list[str]:
    """The start-up section: wall seconds of each command, and the first steps against the raw floor's."""
    floor = statistics.median(times[RAW_FLOOR])
    lines = [
        "## Start-up (wall seconds)",
        "",
        f"Measured {datetime.date.today()} on {_cpu_model()}, load average at the end {load}. The first-step",
        "commands ran in turns (`python -m bench.run --startup`); the raw floor is `import torch` and one AdamW step",
        "of a small CNN, which imports torch._dynamo as every torch.optim step's first call does.",
        "",
        "| command | seconds | median ÷ raw floor |",
        "|---|---|---|",
    ]
    for name, values in times.items():
        ratio = f"{statistics.median(values) / floor:.2f}" if name in FIRST_STEP_COMMANDS else ""
        lines.append(f"| {name} | {spread(values)} | {ratio} |")
    return lines


def best_seconds(work, repeats: int = 20, trials: int = 5) -> float:
    """Seconds per call of `work`: after a warm-up call, the best of `trials` timings of `repeats` calls."""
    work()
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        best = min(best, time.perf_counter() - started)
    return best / repeats


def matmul_peak(dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of a size x size matmul."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats=10)


def gpt_params(cfg) -> int:
    """The GPT's parameters that take part in its matmuls: all but the position embeddings (a lookup); the
    token embedding stays in, because tied to the output layer it is also that layer's matmul. Counted on
    the meta device: nothing is allocated, whatever the size."""
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    return sum(p.numel() for name, p in net.named_parameters() if "wpe" not in name)


def gpt_flops_per_token(cfg) -> float:
    """Training FLOPs per token as nanoGPT's estimate_mfu (PaLM appendix B): 6 x parameters + attention."""
    params = gpt_params(cfg)
    layers, dim, context = cfg.model.net.depth, cfg.model.net.dim, cfg.data.block_size
    return 6 * params + 12 * layers * dim * context


def linear_matmul_shapes(cfg) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of the linear layers in one GPT step: per nn.Linear the forward
    product and the two of the backward pass."""
    tokens = cfg.data.batch_size * cfg.data.block_size
    shapes = []
    for module in instantiate(cfg.model.net).modules():
        if isinstance(module, nn.Linear):
            d_in, d_out = module.in_features, module.out_features
            shapes += [(tokens, d_in, d_out), (tokens, d_out, d_in), (d_out, tokens, d_in)]
    return shapes


def linear_matmul_flops(shapes: list[tuple[int, int, int]]) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def linear_matmul_rate(cfg, dtype: torch.dtype) -> float:
    """FLOP/s of one GPT step's linear-layer matmuls replayed alone at their shapes: what the step would
    reach if nothing but these matmuls took time, i.e. the ceiling on utilisation at this model size."""
    shapes = linear_matmul_shapes(cfg)
    operands = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
    return linear_matmul_flops(shapes) / best_seconds(lambda: [a @ b for a, b in operands])


def gpt_step_parts(cfg, dtype: torch.dtype, matmul_rate: float) -> dict[str, float]:
    """Seconds per training step spent in the parts of the baby GPT's step, each replayed alone at the
    step's shapes and dtype: the linear layers' matmuls (at `matmul_rate`, from linear_matmul_rate),
    attention, GELU and the norms (forward and backward each) and the optimizer step. The rest of a
    step is everything else: embeddings, residual adds, reshapes, the loss, autograd's and Python's
    own work."""
    from dlforge.nets.layers.attention import scaled_dot_product

    batch, length = cfg.data.batch_size, cfg.data.block_size
    layers, dim, heads = cfg.model.net.depth, cfg.model.net.dim, cfg.model.net.heads

    def leaf(*shape: int, leaf_dtype: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*shape, dtype=leaf_dtype, requires_grad=True)

    def forward_backward(forward):
        gradient = torch.randn_like(forward())
        return lambda: forward().backward(gradient)

    q, k, v = (leaf(batch, heads, length, dim // heads) for _ in range(3))
    hidden = leaf(batch, length, 4 * dim)
    normed = leaf(batch, length, dim, leaf_dtype=torch.float32)  # autocast runs norms in fp32
    norm = nn.LayerNorm(dim, bias=cfg.model.net.bias)
    net = instantiate(cfg.model.net)
    optimizer = instantiate(cfg.optimizer)(param_groups(net))
    for parameter in net.parameters():
        parameter.grad = torch.randn_like(parameter)
    return {
        "linear-layer matmuls": linear_matmul_flops(linear_matmul_shapes(cfg)) / matmul_rate,
        "attention": layers * best_seconds(forward_backward(lambda: scaled_dot_product(q, k, v, causal=True))),
        "GELU": layers * best_seconds(forward_backward(lambda: F.gelu(hidden))),
        "LayerNorm": (2 * layers + 1) * best_seconds(forward_backward(lambda: norm(normed))),
        "optimizer step": best_seconds(optimizer.step),
    }


def utilisation(overhead_rows: list[dict]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(MODELS["gpt"], Path(tmp))
        flops_per_token = gpt_flops_per_token(cfg)
        tokens_per_step = cfg.data.batch_size * cfg.data.block_size
    fp32_peak = matmul_peak(torch.float32)
    rows = []
    for row in overhead_rows:
        if row["model"] != "gpt":
            continue
        dtype = torch.float32 if row["precision"] == "fp32" else torch.bfloat16
        peak = fp32_peak if dtype == torch.float32 else matmul_peak(dtype)
        rates = {"pipeline": statistics.median(row["pipeline"]), "raw loop": statistics.median(row["raw"])}
        matmul = linear_matmul_rate(cfg, dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            parts = gpt_step_parts(cfg, dtype, matmul)
        for side, steps_per_s in rates.items():
            achieved = steps_per_s * tokens_per_step * flops_per_token
            rows.append(
                {
                    "precision": row["precision"],
                    "side": side,
                    "tokens_per_s": steps_per_s * tokens_per_step,
                    "gflops": achieved / 1e9,
                    "peak_gflops": peak / 1e9,
                    "fp32_peak_share": achieved / fp32_peak,
                    "own_peak_share": achieved / peak,
                    "matmul_gflops": matmul / 1e9,
                    "step_seconds": 1 / steps_per_s,
                    "parts": parts,
                }
            )
    return rows


def ddp_speedup(steps: int) -> dict:
    """Samples/s of 2-process CPU DDP against 1 process, CNN on digits: the same 64-sample optimizer steps
    (`data.batch_size` is global: each of 2 processes takes 32 samples of a step)."""
    rates = {}
    for name, trainer in (("1 process", "trainer=cpu"), ("2 processes", "trainer=ddp")):
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "rate.json"
            subprocess.run(
                [
                    sys.executable,
                    "src/train.py",
                    trainer,
                    "logger=none",
                    "test=false",
                    "trainer.max_epochs=1000",
                    f"paths.log_dir={tmp}",
                    "+callbacks.bench_timer._target_=bench.timing.StepTimer",
                    "+callbacks.bench_timer.warmup_steps=30",
                    f"+callbacks.bench_timer.measure_steps={steps}",
                    f"+callbacks.bench_timer.result_path={result}",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            timing = json.loads(result.read_text())
            rates[name] = timing["steps"] / timing["seconds"] * 64
    return rates


def generation_speed(new_tokens: int = 200) -> dict:
    from dlforge.objectives.decoding import generate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(MODELS["gpt"], Path(tmp))
        torch.manual_seed(0)
        net = instantiate(cfg.model.net).eval()
    speeds = {}
    for use_cache in (False, True, False, True):
        started = time.perf_counter()
        generate(net, [5, 6, 7], new_tokens, temperature=0, use_kv_cache=use_cache)
        speeds.setdefault(use_cache, []).append(new_tokens / (time.perf_counter() - started))
    return {"without cache": speeds[False], "with cache": speeds[True]}


def eval_speed(model: str) -> float:
    """Test-set samples/s of a Lightning test loop (what src/eval.py runs), digits test split."""
    from dlforge.config.build import build_datamodule, build_model, build_trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*MODELS[model], f"paths.log_dir={tmp}"], Path(tmp) / "run")
        datamodule, net = build_datamodule(cfg), build_model(cfg, for_training=False)
        trainer = build_trainer(cfg, callbacks=[], loggers=[], enable_progress_bar=False)
        trainer.test(net, datamodule=datamodule, verbose=False)  # warm-up
        started = time.perf_counter()
        trainer.test(net, datamodule=datamodule, verbose=False)
        return len(datamodule.splits["test"]) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="overhead ratios of cnn and gpt at fp32 only")
    parser.add_argument("--data-wait", action="store_true", help="data wait of every loading path, into BENCHMARKS.md")
    parser.add_argument("--report-cost", action="store_true", help="share of the default run showing it, printed")
    parser.add_argument("--startup", action="store_true", help="seconds to the first step against raw PyTorch's")
    parser.add_argument("--scale", action="store_true", help="GB-sized shards and token streams, DDP: BENCHMARKS.md")
    parser.add_argument("--scratch", default=tempfile.gettempdir(), help="where --scale writes its sets (deleted)")
    args = parser.parse_args()
    from bench import data

    tune_process()  # the pipeline's process settings, so that the raw loop runs under them too
    DataClock.install()
    torch.set_num_threads(os.cpu_count())
    steps = {"cnn": 300, "vit": 150, "gpt": 150}
    if args.quick:
        overhead(["cnn", "gpt"], ["fp32"], repeats=3, warmup=20, steps=steps, bare=False)
        return
    if args.data_wait:
        rows = data.data_wait(["cnn", "vit"], repeats=2, warmup=20, steps={"cnn": 200, "vit": 100})
        update_benchmarks(data.data_wait_lines(rows, load_average()))
        return
    if args.scale:
        with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
            shards = data.shard_scale(Path(scratch), size=700_000, steps=300, repeats=2)
            update_benchmarks(data.shard_scale_lines(shards))
            streams = data.gpt_streams(Path(scratch), {"50 MB": 50 * 10**6, "2 GB": 2 * 10**9}, steps=150, repeats=3)
            update_benchmarks(data.gpt_stream_lines(streams))
        update_benchmarks(ddp_lines(ddp_speedup(steps=200), load_average()))
        return
    if args.startup:
        update_benchmarks(startup_lines(startup_seconds(), load_average()))
        return
    if args.report_cost:
        rows = report_cost(repeats=2)
        print("\n".join(report_cost_lines(rows, matplotlib_comes_with_lightning(), load_average())))
        return

    started = time.time()
    results = {"overhead": overhead(list(MODELS), list(PRECISIONS), repeats=5, warmup=30, steps=steps)}
    results["utilisation"] = utilisation(results["overhead"])
    results["data_wait"] = (data.data_wait(["cnn", "vit"], repeats=2, warmup=30, steps=steps), load_average())
    results["report_cost"] = (report_cost(repeats=2), matplotlib_comes_with_lightning(), load_average())
    results["startup"] = (startup_seconds(), load_average())
    results["ddp"] = (ddp_speedup(steps=200), load_average())
    results["eval"] = {model: eval_speed(model) for model in ("cnn", "vit")}
    results["generation"] = generation_speed()
    write_report(results, time.time() - started)


def write_report(results: dict, seconds: float) -> None:
    import lightning

    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m bench.run` on {datetime.date.today()} in {seconds / 60:.1f} min.",
        f"Machine: {platform.processor() or platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}.",
        "Figures: median (min-max) of repeats, all measured in one process.",
        "",
        "## Overhead: training steps/s of the pipeline ÷ a minimal PyTorch loop",
        "",
        "Same network, in-memory data, batch size, optimizer, schedule, precision, threads and process settings",
        "(`dlforge.runtime.tune_process`). Steps are timed end to end within epochs (data fetching included,",
        "validation and epoch-end checkpoints not). Each run is divided by the mean of the raw-loop runs just",
        "before and after it. *Bare Lightning*: the raw loop's network, loss and optimizer in a LightningModule",
        "and a Trainer with every option off, on the pipeline's data loader: the framework's own floor.",
        "",
        "| model | precision | raw loop steps/s | pipeline steps/s | pipeline ÷ raw | bare Lightning ÷ raw "
        "| waiting for data |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["overhead"]:
        floor = spread(row["lightning_ratio"]) if row["lightning_ratio"] else "-"
        lines.append(
            f"| {row['model']} | {row['precision']} | {spread(row['raw'])} | {spread(row['pipeline'])} | "
            f"{spread(row['ratio'])} | {floor} | {spread([100 * w for w in row['data_wait']])} % |"
        )
    lines += [
        "",
        "## GPT utilisation (baby GPT, char level, batch 12 x 64 tokens)",
        "",
        "Model FLOPs as nanoGPT's estimate_mfu. *Matmuls alone*: the step's linear-layer matmuls (forward and",
        "backward) replayed at their shapes without anything else, the ceiling at this model size.",
        "",
        "| precision | loop | tokens/s | model GFLOP/s | share of fp32 peak | share of own peak "
        "| matmul peak GFLOP/s (same dtype) | matmuls alone GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["utilisation"]:
        lines.append(
            f"| {row['precision']} | {row['side']} | {row['tokens_per_s']:.0f} | {row['gflops']:.1f} | "
            f"{100 * row['fp32_peak_share']:.0f} % | {100 * row['own_peak_share']:.0f} % | {row['peak_gflops']:.0f} | "
            f"{row['matmul_gflops']:.0f} |"
        )
    lines += [
        "",
        "Where a step's time goes: its parts replayed alone at the step's shapes (forward and backward), in",
        "milliseconds and as a share of the raw loop's step; *the rest* is embeddings, residual adds, reshapes,",
        "the loss, autograd's and Python's own work.",
        "",
        "| precision | step (raw loop) | " + " | ".join(results["utilisation"][0]["parts"]) + " | the rest |",
        "|---|---|" + "---|" * (len(results["utilisation"][0]["parts"]) + 1),
    ]
    for row in results["utilisation"]:
        if row["side"] != "raw loop":
            continue
        step, parts = row["step_seconds"], row["parts"]
        cells = [
            f"{1e3 * seconds:.2f} ({100 * seconds / step:.0f} %)"
            for seconds in [*parts.values(), step - sum(parts.values())]
        ]
        lines.append(f"| {row['precision']} | {1e3 * step:.2f} | " + " | ".join(cells) + " |")
    from bench.data import data_wait_lines

    lines += ["", *data_wait_lines(*results["data_wait"])]
    lines += ["", *report_cost_lines(*results["report_cost"])]
    lines += ["", *startup_lines(*results["startup"])]
    lines += ["", *ddp_lines(*results["ddp"]), "", "## Evaluation and generation", ""]
    lines += [f"- eval ({model}, digits test split): {rate:.0f} samples/s" for model, rate in results["eval"].items()]
    generation = results["generation"]
    lines += [
        f"- greedy generation of 200 tokens, baby GPT: {spread(generation['with cache'])} tokens/s with the KV "
        f"cache, {spread(generation['without cache'])} without",
        "",
        "GPU figures (GPT-2 124M tokens/s and MFU, eager and compiled, pipeline beside a raw loop; ViT-B/16 images/s)",
        "come from `python -m bench.gpu` on a CUDA machine, which prints its section for this file.",
        "",
    ]
    kept = [section for heading, section in _sections(BENCHMARKS.read_text()) if heading.startswith(ONLY_WITH_SCALE)]
    BENCHMARKS.write_text("\n".join([*lines, *(line for section in kept for line in section)]))
    print("\n".join(lines))


BENCHMARKS = ROOT / "BENCHMARKS.md"
ONLY_WITH_SCALE = ("## A shard set of several GB", "## GPT on a small and a large token stream")  # --scale's own


def ddp_lines(rates: dict, load: str) -> list[str]:
    return [
        "## DDP on CPU (CNN on digits, samples/s)",
        "",
        "`data.batch_size=64` is the batch of one optimizer step over all processes: with 2, each takes 32 samples",
        "of every step, so both runs take the same steps. Samples/s over timed steps (as above).",
        f"1 process: {rates['1 process']:.0f}; 2 processes: {rates['2 processes']:.0f}; "
        f"ratio {rates['2 processes'] / rates['1 process']:.2f}. Load average at the end: {load}.",
    ]


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, lines with a blank line after) of each `## ` section of a Markdown file; the part before the
    first under the heading ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## "):
            sections.append((line, []))
        sections[-1][1].append(line)
    return [(heading, [*lines[: len(lines) - (lines[-1] == "")], ""]) for heading, lines in sections if lines]


def update_benchmarks(lines: list[str]) -> None:
    """Put the `## ` sections of `lines` into BENCHMARKS.md in place of those with the same heading (after the
    others if it has none), leaving the rest as it is."""
    print("\n".join(lines), flush=True)
    new = dict(_sections("\n".join(lines)))
    new.pop("", None)
    sections = [(heading, new.pop(heading, section)) for heading, section in _sections(BENCHMARKS.read_text())]
    sections += new.items()
    BENCHMARKS.write_text("\n".join(line for _, section in sections for line in section))


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()

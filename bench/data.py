"""Benchmarks of the data paths (called by bench.run): the share of step time spent waiting for data on each
loading path, a shard set of several GB read from a cold page cache, and the GPT on a small and a large
token stream. Generated sets go under a temporary dir (`--scratch`, /tmp by default) and are deleted after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.run import MODELS, load_average, pipeline_rate, spread

WORKERS = (0, 1, 2)


def digits_image_folder(root: Path) -> Path:
    """scikit-learn's digits as PNG files in torchvision's ImageFolder layout (`root/{train,test}/<label>/`),
    every fifth image in the test split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for row, (image, label) in enumerate(zip(digits.images.astype(np.uint8), digits.target)):
        directory = root / ("test" if row % 5 == 0 else "train") / str(label)
        directory.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image * 15).save(directory / f"{row:04d}.png")
    return root


def loading_paths(scratch: Path) -> dict[str, list[str]]:
    """Overrides of each way of loading digits: arrays in memory, an array read per sample, PNG files
    decoded per sample (ImageFolder), LitData shards streamed."""
    folder = digits_image_folder(scratch / "digits_folder")
    return {
        "memory": ["data.loading=memory"],
        "samples (array)": ["data.loading=samples"],
        "samples (ImageFolder PNGs)": [
            "data=image_folder",
            f"data.source.path={folder}",
            "data.channels=1",
            "data.image_size=8",
        ],
        "shards (LitData)": ["data.loading=shards", f"paths.data_dir={scratch / 'data'}"],
    }


def data_wait(models: list[str], repeats: int, warmup: int, steps: dict[str, int]) -> list[dict]:
    """Steps/s and the share of step time spent waiting for data, per model, loading path and number of
    loader workers (the memory path has none); within a repeat every setting runs in turn, so a drift
    affects them alike."""
    with tempfile.TemporaryDirectory() as scratch:
        paths = loading_paths(Path(scratch))
        settings = [
            (model, name, workers)
            for model in models
            for name in paths
            for workers in ((None,) if name == "memory" else WORKERS)
        ]
        rows = {setting: {"pipeline": [], "data_wait": []} for setting in settings}
        for _ in range(repeats):
            for model, name, workers in settings:
                extra = [] if workers is None else [f"data.num_workers={workers}"]
                rate, wait = pipeline_rate([*MODELS[model], *paths[name], *extra], warmup, steps[model])
                rows[model, name, workers]["pipeline"].append(rate)
                rows[model, name, workers]["data_wait"].append(wait)
                print(f"{model} {name} workers={workers}: {rate:.3g} steps/s, data wait {100 * wait:.2f} %", flush=True)
    return [
        {"model": model, "loading": name, "workers": workers, "steps": steps[model], **rows[model, name, workers]}
        for model, name, workers in settings
    ]


def data_wait_lines(rows: list[dict], load: str) -> list[str]:
    lines = [
        "## Waiting for data, by loading path (digits, fp32)",
        "",
        "The share of each training step spent in the DataLoader's `next()` (steps timed as above), for each way",
        "of loading the same images: `memory` slices whole batches from normalised tensors in the training",
        "process; `samples (array)` reads each image from the memory-mapped array, normalises and collates it;",
        "`samples (ImageFolder PNGs)` decodes a PNG file per image (`data=image_folder`); `shards (LitData)`",
        "streams LitData chunks (`data.loading=shards`). With 0 workers the training process does the reading;",
        f"with 1 or 2, loader processes do, on the same 2 cores as the training. Target: ≤ 5 %. Load average at the "
        f"end: {load}.",
        "",
        "| model | loading | workers | timed steps | pipeline steps/s | waiting for data |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['model']} | {row['loading']} | {'-' if row['workers'] is None else row['workers']} | {row['steps']} | "
        f"{spread(row['pipeline'])} | {spread([100 * w for w in row['data_wait']])} % |"
        for row in rows
    ]
    return lines


# --- several GB from a cold page cache ------------------------------------------------------------------


def evict(directory: Path) -> tuple[int, str]:
    """Drop the page cache of every file under `directory` (POSIX_FADV_DONTNEED per file: a container may
    refuse /proc/sys/vm/drop_caches); returns their bytes and what `fincore` says is still cached."""
    files = [path for path in sorted(directory.rglob("*")) if path.is_file()]
    total = 0
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total, cached(files)


def cached(files: list[Path]) -> str:
    """The bytes of `files` in the page cache, by util-linux's `fincore` (mincore(2)); '?' without it."""
    if shutil.which("fincore") is None:
        return "?"
    output = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return f"{sum(int(line) for line in output.split()) / 2**20:.1f} MiB"


SYNTHETIC = ["data=synthetic", "data.channels=3", "data.image_size=32"]  # CIFAR-sized random images


def shard_scale(scratch: Path, size: int, steps: int, repeats: int) -> dict:
    """Writes `size` synthetic 3x32x32 images as shards (their train split several GB), then, with the page
    cache of every shard evicted before each run: the loader alone streaming the whole train split (samples/s,
    MB/s), and the CNN training from the shards against the CNN on an in-memory synthetic set of the same
    images' shape (steps/s, data wait), in turn, `repeats` times."""
    from bench.run import compose
    from dlforge.config.build import build_datamodule
    from dlforge.data.verify import load

    data_dir = scratch / "scale"
    shards = [*SYNTHETIC, "data.loading=shards", f"data.source.size={size}", f"paths.data_dir={data_dir}"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([*MODELS["cnn"], *shards, f"paths.log_dir={tmp}"], Path(tmp) / "run")
        datamodule = build_datamodule(cfg)
        load(datamodule)  # writes the shards
    written = time.perf_counter() - started
    train_dir = datamodule.shards_dir / "train"
    result = {"size": size, "write_seconds": written, "steps": steps, "runs": []}
    result["set_bytes"] = sum(path.stat().st_size for path in datamodule.shards_dir.rglob("*") if path.is_file())
    result["train_samples"] = len(datamodule.splits["train"])
    for _ in range(repeats):
        train_bytes, still = evict(train_dir)
        torch.manual_seed(0)
        datamodule.num_workers = 2
        started = time.perf_counter()
        seen = sum(len(labels) for _, labels in datamodule.train_dataloader())
        seconds = time.perf_counter() - started
        run = {"train_bytes": train_bytes, "cached_before": still, "stream_samples_s": seen / seconds}
        run["stream_mb_s"] = train_bytes * seen / result["train_samples"] / seconds / 1e6
        for name, overrides in (
            ("memory", [*SYNTHETIC, "data.source.size=20000"]),
            ("shards", [*shards, "data.num_workers=2"]),
        ):
            if name == "shards":
                run["cached_before_training"] = evict(train_dir)[1]
            rate, wait = pipeline_rate([*MODELS["cnn"], *overrides], warmup=5, steps=steps)
            run[name] = {"steps_s": rate, "data_wait": wait}
        run["load"] = load_average()
        print(run, flush=True)
        result["runs"].append(run)
    shutil.rmtree(data_dir)
    return result


def shard_scale_lines(result: dict) -> list[str]:
    runs = result["runs"]
    ratio = [run["shards"]["steps_s"] / run["memory"]["steps_s"] for run in runs]
    lines = [
        "## A shard set of several GB from a cold page cache (CNN, synthetic 3x32x32 images)",
        "",
        f"`data=synthetic data.source.size={result['size']} data.loading=shards` written once by `prepare_data` "
        f"({result['set_bytes'] / 1e9:.2f} GB in all, the train split {runs[0]['train_bytes'] / 1e9:.2f} GB and "
        f"{result['train_samples']} images; {result['write_seconds']:.0f} s to write). Before each measurement the",
        "page cache of every shard was dropped (`os.posix_fadvise(POSIX_FADV_DONTNEED)` per file; what `fincore`",
        "still counted is shown). *Stream*: the train loader alone (2 workers) reading the whole train split.",
        "*Training*: the CNN from the shards (2 workers), beside the CNN on 20000 images of the same shape held",
        f"in memory, in turn; {result['steps']} steps timed as above.",
        "",
        "| run | cached before | stream samples/s | stream MB/s | memory steps/s | shards steps/s | shards ÷ memory "
        "| shards data wait | load average |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(runs, 1):
        lines.append(
            f"| {index} | {run['cached_before']}, {run['cached_before_training']} | {run['stream_samples_s']:.0f} | "
            f"{run['stream_mb_s']:.0f} | {run['memory']['steps_s']:.3g} | {run['shards']['steps_s']:.3g} | "
            f"{ratio[index - 1]:.3f} | {100 * run['shards']['data_wait']:.2f} % | {run['load']} |"
        )
    return lines


# --- GPT on a small and a large token stream ------------------------------------------------------------


def token_stream(path: Path, tokens: int, vocab_size: int) -> Path:
    """`tokens` random uint16 token ids below `vocab_size`, written as a flat stream in 64 MiB pieces."""
    generator = np.random.default_rng(0)
    stream = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(tokens,))
    for start in range(0, tokens, 2**25):
        stop = min(start + 2**25, tokens)
        stream[start:stop] = generator.integers(0, vocab_size, stop - start, dtype=np.uint16)
    stream.flush()
    del stream
    return path


def gpt_streams(scratch: Path, sizes: dict[str, int], steps: int, repeats: int) -> list[dict]:
    """GPT steps/s (the pipeline, fp32) with its training stream swapped for a memory-mapped stream of each
    size in `sizes` (name -> bytes), each evicted from the page cache before its run, the sizes in turn."""
    from dlforge.data.text import LanguageModelData

    with tempfile.TemporaryDirectory() as tmp:
        from bench.run import compose

        vocab_size = compose(MODELS["gpt"], Path(tmp) / "run").data.vocab_size
    paths = {name: token_stream(scratch / f"tokens-{name}.npy", size // 2, vocab_size) for name, size in sizes.items()}
    setup = LanguageModelData.setup
    rows = {
        name: {"stream": name, "bytes": paths[name].stat().st_size, "steps_s": [], "load": [], "steps": steps}
        for name in sizes
    }
    try:
        for _ in range(repeats):
            for name, path in paths.items():

                def with_stream(self, stage=None, path=path):
                    setup(self, stage)
                    self.streams["train"] = np.load(path, mmap_mode="r")

                LanguageModelData.setup = with_stream
                os.posix_fadvise(fd := os.open(path, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
                rate, _ = pipeline_rate(MODELS["gpt"], warmup=5, steps=steps)
                rows[name]["steps_s"].append(rate)
                rows[name]["load"].append(load_average())
                print(f"gpt on {name}: {rate:.3g} steps/s", flush=True)
    finally:
        LanguageModelData.setup = setup
        for path in paths.values():
            path.unlink()
    return list(rows.values())


def gpt_stream_lines(rows: list[dict]) -> list[str]:
    small, large = rows
    ratios = [b / a for a, b in zip(small["steps_s"], large["steps_s"])]
    lines = [
        "## GPT on a small and a large token stream (baby GPT, fp32)",
        "",
        "The pipeline's GPT with its training stream replaced by a memory-mapped stream of random tokens of each",
        "size (`data/text.py` reads windows at random offsets straight from the map), the file's page cache",
        f"dropped before each run, the sizes in turn; {small['steps']} steps timed as above.",
        "Target: large ÷ small ≥ 0.95.",
        "",
        "| stream | bytes | steps/s |",
        "|---|---|---|",
    ]
    lines += [f"| {row['stream']} | {row['bytes'] / 1e6:.0f} MB | {spread(row['steps_s'])} |" for row in rows]
    lines += [
        "",
        f"{large['stream']} ÷ {small['stream']}: {spread(ratios)}. Load average at the end: {large['load'][-1]}.",
    ]
    return lines

"""Detection peers side by side: our YOLO-style net and torchvision's FCOS on the same backbone and neck, the
same scenes, optimizer, step budget, batch and precision, each trained and tested as `python src/train.py
experiment=scenes_<model>` runs it, one after the other in this process.

    python -m bench.detection                  # the presets' budget; prints a Markdown table for BENCHMARKS.md
    python -m bench.detection --steps 200 trainer.precision=bf16-mixed   # any other override, for both

Steps/s are optimizer steps over the fit's wall time (validation included); the load average is printed
beside them, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.run import compose, load_average

MODELS = ("yolo", "fcos")


def train_and_test(model: str, steps: int | None, overrides: list[str], log_dir: Path) -> dict:
    """The test metrics of one run of experiment=scenes_<model>, with its steps and fit seconds."""
    from dlforge.runtime import tune_process
    from dlforge.tasks.train import train

    tune_process()
    run_dir = log_dir / model
    budget = [f"trainer.max_steps={steps}"] if steps else []
    overrides = [f"experiment=scenes_{model}", *budget, *overrides, "logger=none", f"paths.log_dir={log_dir}"]
    cfg = compose(overrides, run_dir)
    train(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return metrics | {"steps": last["global_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of each model (default: the preset's)")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the runs here (default: a temporary dir)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        log_dir = args.log_dir or Path(temporary)
        rows = []
        for model in MODELS:
            metrics = train_and_test(model, args.steps, args.overrides, log_dir)
            rows.append((model, metrics, load_average()))
    print("| model | optimizer steps | mAP@0.5 | mAP@[.5:.95] | fit s | steps/s | load (1, 5, 15 min) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for model, metrics, load in rows:
        seconds = metrics["fit seconds"]
        print(
            f"| {model} | {metrics['steps']} | {metrics['test/map_50']:.3f} | {metrics['test/map']:.3f} | "
            f"{seconds:.0f} | {metrics['steps'] / seconds:.2f} | {load} |"
        )


if __name__ == "__main__":
    main()

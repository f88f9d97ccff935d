"""Channels-last convolution weights (`model.channels_last=true`) against the default contiguous layout: training
steps of the pipeline (`dlforge.tasks.train.train`, data loading included) for each experiment of a
convolutional net, the two layouts taking turns within each repeat so that a drift in the machine's speed
reaches both.

    python -m bench.memory_format                # prints a Markdown table for BENCHMARKS.md
    python -m bench.memory_format --experiments scenes_clip scenes_yolo --repeats 3

The experiments' data must be there (`python src/prepare.py experiment=<name>`); figures are the median
(min-max) of the repeats, and the ratio is channels-last's seconds per step over contiguous's in the same repeat.
"""

from __future__ import annotations

import argparse

import torch

from bench.run import load_average, pipeline_rate, spread

EXPERIMENTS = (
    "digits_cnn",
    "scenes_objects",
    "scenes_clip",
    "scenes_yolo",
    "scenes_fcos",
    "scenes_unet",
    "scenes_maskrcnn",
)
LAYOUTS = {"contiguous": "false", "channels_last": "true"}


def measure(experiments: list[str], repeats: int, warmup: int, steps: int) -> dict[str, dict[str, list[float]]]:
    seconds = {experiment: {layout: [] for layout in LAYOUTS} for experiment in experiments}
    for _ in range(repeats):
        for experiment in experiments:
            for layout, flag in LAYOUTS.items():
                rate, _ = pipeline_rate([f"experiment={experiment}", f"model.channels_last={flag}"], warmup, steps)
                seconds[experiment][layout].append(1 / rate)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="steps before the timed ones, per run")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    args = parser.parse_args()
    seconds = measure(args.experiments, args.repeats, args.warmup, args.steps)
    print(f"torch threads {torch.get_num_threads()}; load average at the end {load_average()}\n")
    print("| experiment | contiguous s/step | channels_last s/step | channels_last ÷ contiguous |")
    print("|---|---|---|---|")
    for experiment, layouts in seconds.items():
        ratio = spread([last / contiguous for last, contiguous in zip(layouts["channels_last"], layouts["contiguous"])])
        print(f"| {experiment} | {spread(layouts['contiguous'])} | {spread(layouts['channels_last'])} | {ratio} |")


if __name__ == "__main__":
    main()

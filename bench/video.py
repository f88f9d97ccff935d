"""Divided space-time attention against joint (and space-only) attention: training steps of the video
Transformer as `experiment=moving_video` builds it, the three kinds side by side in one process.

    python -m bench.video              # prints a Markdown table for BENCHMARKS.md

A step is forward, cross-entropy, backward and an AdamW step on random clips of the experiment's shape, and
on clips of a longer, finer one (16 frames of 8x8-pixel tokens one frame deep: 1,024 tokens, TimeSformer's
regime, where attention's cost grows with the square of the tokens). The kinds take turns within each
repeat, so a drift in the machine's speed reaches all of them; figures are the median (min-max) of the
repeats, and the ratios are divided's and space-only's seconds per step over joint's in the same repeat.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from bench.run import compose, load_average, spread

KINDS = ("joint", "divided", "space_only")
SHAPES = {  # name -> (overrides of experiment=moving_video, batch size)
    "moving_video (8 frames, tubelets 2x8x8: 256 tokens)": ([], 32),
    "16 frames, tubelets 1x8x8: 1,024 tokens": (["data.frames=16", "model.net.tubelet=1"], 4),
}


def step_seconds(net: torch.nn.Module, clips: torch.Tensor, steps: int) -> float:
    head = torch.nn.Linear(net.out_features, 13)
    optimizer = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-3)
    labels = torch.randint(13, (len(clips),))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(head(net(clips)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def measure(repeats: int, steps: int) -> dict[str, dict[str, list[float]]]:
    seconds: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as run_dir:
        for shape, (overrides, batch_size) in SHAPES.items():
            nets = {}
            for kind in KINDS:
                cfg = compose(["experiment=moving_video", *overrides, f"model.net.attention={kind}"], Path(run_dir))
                torch.manual_seed(0)
                nets[kind] = instantiate(cfg.model.net)
            clips = torch.rand(batch_size, cfg.data.frames, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
            seconds[shape] = {kind: [] for kind in KINDS}
            for _ in range(repeats):
                for kind in KINDS:
                    seconds[shape][kind].append(step_seconds(nets[kind], clips, steps))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat and kind")
    args = parser.parse_args()
    seconds = measure(args.repeats, args.steps)
    print(f"torch threads {torch.get_num_threads()}; load average at the end {load_average()}\n")
    columns = ["clips", "batch", *(f"{kind} s/step" for kind in KINDS), "divided ÷ joint", "space_only ÷ joint"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for shape, kinds in seconds.items():
        ratios = [spread([mine / joint for mine, joint in zip(kinds[kind], kinds["joint"])]) for kind in KINDS[1:]]
        cells = [spread(kinds[kind]) for kind in KINDS]
        print(f"| {shape} | {SHAPES[shape][1]} | {' | '.join(cells)} | {' | '.join(ratios)} |")


if __name__ == "__main__":
    main()

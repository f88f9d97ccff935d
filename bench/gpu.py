"""GPU benchmark (CUDA only): GPT-2 124M training throughput and model-FLOPs utilisation, ViT-B/16 at 224 px.

    python -m bench.gpu            # needs a CUDA GPU; prints the Markdown tables for BENCHMARKS.md

GPT-2 124M (12 layers, 12 heads, 768 dims, context 1024, vocabulary 50304 as nanoGPT pads it) in bf16 autocast,
with fused AdamW and SDPA's flash-attention kernel (the only backend allowed, so a fallback fails loudly), eager
and through torch.compile: the pipeline (`dlforge.tasks.train.train`, what src/train.py runs, `model.compile`)
beside a raw PyTorch loop of the same network, data, batch, optimizer and schedule on the same chip, in one
process as bench/run.py measures on CPU. Utilisation (MFU): model FLOPs per second (nanoGPT's estimate, 6 x
parameters + attention per token) over the chip's dense bf16 peak. ViT-B/16 at 224 px: training images/s of
the raw loop on synthetic images, eager and compiled.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.run import compose, gpt_flops_per_token, loop_rate, pipeline_rate, raw_rate
from dlforge.nets.vision.vit import ViT
from dlforge.objectives.optim import constant, param_groups

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; the first entry whose
# name is part of torch.cuda.get_device_name() wins (so the PCIe and NVL H100 come before the SXM one).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
GPT2_124M = {"depth": 12, "heads": 12, "dim": 768, "block_size": 1024, "vocab_size": 50304, "batch_size": 16}
VIT_B16 = {"image_size": 224, "patch_size": 16, "in_channels": 3, "dim": 768, "depth": 12, "heads": 12}
VIT_CLASSES = 1000


def peak_tflops(device_name: str) -> float | None:
    """The chip's dense bf16 peak, or None for a chip the table lacks."""
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def gpt_overrides(size: dict, data_dir: str) -> list[str]:
    """The pipeline's config for a GPT-2 of `size` (GPT2_124M's keys) in bf16 with fused AdamW, char-level pydoc
    text under `data_dir` (the model is built with `vocab_size` ids; the text uses about a hundred)."""
    return [
        "model=gpt",
        *(f"model.net.{key}={size[key]}" for key in ("depth", "heads", "dim")),
        *(f"data.{key}={size[key]}" for key in ("block_size", "vocab_size", "batch_size")),
        "model.net.bias=true",  # GPT-2's linear layers and norms have biases
        "trainer.precision=bf16-mixed",
        "optimizer.fused=true",
        f"paths.data_dir={data_dir}",
        "verify_data=false",  # the token streams are made for the benchmark, not the versioned data/
    ]


def gpt_rows(
    size: dict, data_dir: str, warmup: int, steps: int, device: str, compiles: tuple[bool, ...] = (False, True)
) -> list[dict]:
    """Tokens/s of the raw loop and the pipeline side by side, eager and/or compiled (`compiles`). The pipeline
    runs where a Trainer's `accelerator: auto` puts it: on the GPU if there is one."""
    overrides = gpt_overrides(size, data_dir)
    tokens_per_step = size["batch_size"] * size["block_size"]
    rows = []
    for compile in compiles:
        rates = {
            "raw loop": raw_rate(overrides, warmup, steps, device, compile),
            "pipeline": pipeline_rate([*overrides, f"model.compile={str(compile).lower()}"], warmup, steps)[0],
        }
        for loop, rate in rates.items():
            tokens_per_s, of_raw = rate * tokens_per_step, rate / rates["raw loop"]
            rows.append({"loop": loop, "compile": compile, "tokens_per_s": tokens_per_s, "of_raw": of_raw})
    return rows


def vit_images_per_s(size: dict, batch_size: int, warmup: int, steps: int, device: str, compile: bool) -> float:
    """Training images/s of a ViT classifier of `size` in the raw loop (bf16, fused AdamW), on one synthetic
    batch of images made on the device (no data loading)."""
    torch.manual_seed(0)
    net = ViT(**size)
    model = nn.Sequential(net, nn.Linear(net.out_features, VIT_CLASSES)).to(device)
    if compile:
        model.compile()
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3, fused=True)
    shape = (batch_size, size["in_channels"], size["image_size"], size["image_size"])
    batch = torch.randn(shape, device=device), torch.randint(VIT_CLASSES, (batch_size,), device=device)
    batches = iter(lambda: batch, None)  # the same batch, endlessly
    return batch_size * loop_rate(model, batches, optimizer, constant(optimizer, 0), warmup, steps, device, bf16=True)


def report(device_name: str, gpt: list[dict], flops_per_token: float, vit: dict[bool, float]) -> str:
    peak = peak_tflops(device_name)
    lines = [
        f"## GPU: GPT-2 124M and ViT-B/16 on {device_name}",
        "",
        f"`python -m bench.gpu`. GPT-2 124M, batch {GPT2_124M['batch_size']} x {GPT2_124M['block_size']} tokens, bf16 "
        "autocast, fused AdamW, flash attention; model FLOPs as nanoGPT's estimate_mfu; MFU against the chip's "
        f"dense bf16 peak ({f'{peak:.0f} TFLOP/s' if peak else 'not in the table: no MFU'}).",
        "",
        "| loop | torch.compile | tokens/s | model TFLOP/s | MFU | ÷ raw loop |",
        "|---|---|---|---|---|---|",
    ]
    for row in gpt:
        tflops = row["tokens_per_s"] * flops_per_token / 1e12
        mfu = f"{100 * tflops / peak:.1f} %" if peak else "-"
        compiled = "yes" if row["compile"] else "no"
        lines.append(
            f"| {row['loop']} | {compiled} | {row['tokens_per_s']:.0f} | {tflops:.1f} | {mfu} | {row['of_raw']:.3f} |"
        )
    lines += [
        "",
        f"ViT-B/16 at 224 px (raw loop, bf16, batch 128): {vit[False]:.0f} images/s eager, {vit[True]:.0f} compiled.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=20, help="steps before timing (compiling happens here)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "error: bench.gpu measures a CUDA GPU and none is visible here (bench.run measures CPUs)", file=sys.stderr
        )
        raise SystemExit(2)
    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts (loss, norms), as any GPU training run sets
    with tempfile.TemporaryDirectory() as data_dir, sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        gpt = gpt_rows(GPT2_124M, data_dir, args.warmup, args.steps, "cuda")
        flops_per_token = gpt_flops_per_token(compose(gpt_overrides(GPT2_124M, data_dir), Path(data_dir) / "run"))
        vit = {compile: vit_images_per_s(VIT_B16, 128, args.warmup, args.steps, "cuda", compile) for compile in (0, 1)}
    print(report(torch.cuda.get_device_name(), gpt, flops_per_token, vit))


if __name__ == "__main__":
    main()

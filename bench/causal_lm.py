"""Throughput of the baby GPT/LLaMA (4 layers, 4 heads, 128 dims, context 64, char vocabulary 128):
training tokens/s at fp32 and bf16 autocast (forward, backward, AdamW step; batch 12), and greedy
generation tokens/s with and without the KV cache (200 new tokens; the two outputs are checked equal).

    python bench/causal_lm.py [--checkpoint outputs/train/runs/<run>/checkpoints/best.ckpt]

Without a checkpoint the nets are randomly initialised (speed does not depend on the weights).
The machine is shared: run it when it is quiet, and compare numbers from the same session only.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from dlforge.generate import generate, load_language_model
from dlforge.nets.gpt import GPT

BATCH, BLOCK, VOCAB = 12, 64, 128


def training_tokens_per_second(net: GPT, precision: str, steps: int) -> float:
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    inputs, targets = torch.randint(0, VOCAB, (2, BATCH, BLOCK))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = F.cross_entropy(net(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH * BLOCK / (time.perf_counter() - started)


def generation_tokens_per_second(net: GPT, use_kv_cache: bool, new_tokens: int) -> tuple[float, list[int]]:
    prompt = list(range(5, 13))
    generate(net, prompt, 10, temperature=0, use_kv_cache=use_kv_cache)  # warm-up
    started = time.perf_counter()
    tokens = generate(net, prompt, new_tokens, temperature=0, use_kv_cache=use_kv_cache)
    return new_tokens / (time.perf_counter() - started), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="generate with this run's net (else random nets of both archs)")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per setting")
    parser.add_argument("--new-tokens", type=int, default=200)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    for arch in ("gpt2", "llama"):
        for precision in ("32-true", "bf16-mixed"):
            torch.manual_seed(0)
            rate = training_tokens_per_second(GPT(VOCAB, BLOCK, arch=arch), precision, args.steps)
            print(f"train    {arch:6} {precision:10} {rate:9.0f} tokens/s")

    nets = {"checkpoint": load_language_model(args.checkpoint)[0]} if args.checkpoint else {
        arch: GPT(VOCAB, BLOCK, arch=arch).eval() for arch in ("gpt2", "llama")}
    for name, net in nets.items():
        cached_rate, cached = generation_tokens_per_second(net, True, args.new_tokens)
        plain_rate, plain = generation_tokens_per_second(net, False, args.new_tokens)
        print(f"generate {name:10} KV cache {cached_rate:6.0f} tokens/s, without {plain_rate:6.0f} tokens/s "
              f"({cached_rate / plain_rate:.1f}x); same tokens: {cached == plain}")


if __name__ == "__main__":
    main()

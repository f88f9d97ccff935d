"""Sampling (top-k, nucleus) and the generate script from checkpoints."""

from __future__ import annotations

import torch

from dlforge.objectives.decoding import sample


def test_sampling_keeps_to_the_top_k_and_the_nucleus():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0])  # probabilities .02 .05 .14 .39 .39
    generator = torch.Generator().manual_seed(0)

    def draws(top_k=None, top_p=None):
        return {sample(logits, 1.0, top_k, top_p, generator) for _ in range(300)}

    assert draws() == {0, 1, 2, 3, 4}
    assert draws(top_k=2) == draws(top_p=0.5) == {3, 4}
    assert draws(top_p=0.8) == {2, 3, 4}
    assert sample(logits, 0.0, None, None, None) == 3  # greedy

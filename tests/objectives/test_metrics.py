"""The training-step metrics of the objectives."""

from __future__ import annotations

import torch


def test_epoch_accuracy_equals_torchmetrics_accuracy_also_across_a_resume():
    from torchmetrics.classification import MulticlassAccuracy

    from dlforge.callbacks.resume import metric_states, restore_metric_states
    from dlforge.objectives.metrics import EpochAccuracy

    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(61, 10, generator=generator), torch.randint(0, 10, (61,), generator=generator)) for _ in range(9)
    ]
    reference, interrupted = MulticlassAccuracy(10, average="micro"), EpochAccuracy(fold_every=2)
    assert interrupted.compute() == reference.compute() == 0  # no update yet
    for logits, targets in batches[:5]:
        reference.update(logits, targets)
        interrupted.update(logits, targets)
    saved = metric_states(torch.nn.ModuleDict({"acc": interrupted}))  # what ExactResume checkpoints
    resumed = torch.nn.ModuleDict({"acc": EpochAccuracy(fold_every=2)})  # 5 updates: 2 folds, 1 pending
    restore_metric_states(resumed, saved)
    for logits, targets in batches[5:]:
        reference.update(logits, targets)
        resumed["acc"].update(logits, targets)
    assert 0.05 < reference.compute() < 0.2  # random guesses, 549 of them
    assert resumed["acc"].compute() == reference.compute()  # bit-identical

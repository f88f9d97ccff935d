"""The progress bar's redraw budget."""

from __future__ import annotations

import time


def test_progress_bar_redraws_at_most_n_times_a_second(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from dlforge.callbacks.progress import ProgressBar

    bar = ProgressBar(redraws_per_second=4)
    answers = []
    redraw_due = bar.redraw_due
    bar.redraw_due = lambda current, total: answers.append(redraw_due(current, total)) or answers[-1]
    started = time.monotonic()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())  # 64 batches of a linear layer: well under a millisecond each
    seconds = time.monotonic() - started
    assert len(answers) == 64  # Lightning asks at every batch
    assert answers[0] and answers[-1]  # the first redraw, and the epoch's end
    assert sum(answers) <= 2 + 4 * seconds

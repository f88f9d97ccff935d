"""The progress bar: Lightning's tqdm bar, redrawn on a clock instead of every n steps."""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn at most `redraws_per_second` times a second (and at the end of
    each epoch), however fast the steps go. A redraw costs ~0.6 ms of the training thread here: every
    10 steps (a fixed `refresh_rate`) that was 0.7 % of the digits CNN's step time, and it would be
    several per cent of a model that steps in a millisecond."""

    def __init__(self, redraws_per_second: float = 4.0, leave: bool = False):
        super().__init__(leave=leave)
        self.min_interval = 1.0 / redraws_per_second
        self.last_redraw = -math.inf

    def redraw_due(self, current: int, total: int) -> bool:
        """Whether to redraw at batch `current` of `total`: at the last one, or when the interval has passed."""
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self.last_redraw >= self.min_interval:
            self.last_redraw = now
            return True
        return False

    # lightning 2.6: private TQDMProgressBar._should_update, asked at every train/val/test batch
    def _should_update(self, current: int, total: int) -> bool:
        return self.redraw_due(current, total)

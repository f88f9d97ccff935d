"""Resume is bit-exact for every model of the config registry (each preset, the README's model names):
a tiny capped run stopped mid-epoch and one stopped at an epoch end, both through the preemption path
(the signal's flag set at the chosen step: a step checkpoint, then a clean stop), resumed in their run
dirs, end with the uninterrupted run's weights, optimizer and loop state, metrics and every logged row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import compose, identical, job_config, presets, small_batches
from dlforge.callbacks.checkpoints import ResumeCheckpoints

# A fine-tuning preset without its checkpoint trains as the preset it extends: resuming it repeats that one, as
# does a preset of another's net, objective and data (lstm_cls is gru_cls's rnn net with another cell).
PRESETS = sorted({(p.net, p.objective, p.data): p.name for p in reversed(presets()) if not p.fine_tuning}.values())
STEPS_PER_EPOCH = 3
RUN = [
    "trainer.max_epochs=2",
    f"++trainer.limit_train_batches={STEPS_PER_EPOCH}",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "++trainer.log_every_n_steps=1",  # a csv row every step: rows at the stop point must be kept, not repeated
    "logger=csv",
]
STOPS = {"mid-epoch": 2, "epoch-end": STEPS_PER_EPOCH}  # global steps


def _train(run_dir: Path, *overrides: str) -> None:
    from dlforge.tasks.train import train

    capped = [*overrides, *small_batches(*overrides), f"paths.log_dir={run_dir.parent}"]
    train(job_config(compose("train", capped, run_dir)))


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(step): the next run stops at that global step as after SIGTERM (the handler sets `received`)."""
    original = ResumeCheckpoints.on_train_batch_end

    def arm(step: int) -> None:
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == step:
                self.received = "SIGTERM"
            return original(self, trainer, *args)

        monkeypatch.setattr(ResumeCheckpoints, "on_train_batch_end", on_train_batch_end)

    return arm


@pytest.mark.parametrize("model", PRESETS)
def test_resume_is_bit_exact(model, stop_at, monkeypatch, tmp_path):
    reference = tmp_path / "uninterrupted"
    _train(reference, f"model={model}", *RUN)
    for stop, step in STOPS.items():
        run_dir = tmp_path / stop
        stop_at(step)
        _train(run_dir, f"model={model}", *RUN)
        assert not (run_dir / "metrics.json").exists(), f"{stop}: the run did not stop"
        assert (run_dir / "checkpoints" / f"step-{step:08d}.ckpt").is_file()
        monkeypatch.undo()  # the resumed run goes on to the end
        _train(run_dir / "resumes" / "1", f"resume={run_dir}")
        _assert_same_end(run_dir, reference, stop)


def _assert_same_end(run_dir: Path, reference: Path, stop: str) -> None:
    resumed, uninterrupted = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (run_dir, reference)
    )
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "global_step", "epoch"):
        assert identical(resumed[key], uninterrupted[key]), f"{stop}: {key}"
    without_time = lambda text: [line for line in text.splitlines() if "fit seconds" not in line]  # noqa: E731
    assert without_time((run_dir / "metrics.json").read_text()) == without_time(
        (reference / "metrics.json").read_text()
    )
    logged = sorted(
        path.relative_to(reference) for path in [*reference.glob("curves/**/*.csv"), reference / "csv" / "metrics.csv"]
    )
    for path in logged:
        assert (run_dir / path).read_text() == (reference / path).read_text(), f"{stop}: {path}"

"""`model.compile=true`: torch.compile changes the speed of training, not its results or its checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import compose, identical, job_config

# A tiny CNN, 3 optimizer steps, no validation: what compiling costs (inductor's C++ kernels) stays small.
RUN = [
    "model=cnn",
    "model.net.channels=[8]",
    "model.net.convs_per_stage=1",
    "trainer.max_steps=3",
    "++trainer.limit_val_batches=0",
    "test=false",
    "logger=none",
    "callbacks.resume_checkpoints.every_n_steps=1",
    "callbacks.resume_checkpoints.keep=5",
]


def _train(run_dir: Path, *overrides: str) -> None:
    from dlforge.tasks.train import train

    train(job_config(compose("train", [*overrides, f"paths.log_dir={run_dir.parent}"], run_dir)))


def _step(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step-{step:08d}.ckpt", weights_only=True)


def test_compiled_training_takes_the_eager_steps_and_saves_plain_checkpoints(tmp_path):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    _train(eager, *RUN)
    _train(compiled, *RUN, "model.compile=true")
    expected, found = _step(eager, 3)["state_dict"], _step(compiled, 3)["state_dict"]
    assert list(found) == list(expected)  # the plain net's keys: no `_orig_mod.` of a wrapping module
    for name, value in expected.items():
        torch.testing.assert_close(found[name], value)

    uninterrupted = _step(compiled, 3)
    _train(compiled / "resumes" / "1", f"ckpt_path={compiled / 'checkpoints' / 'step-00000002.ckpt'}")
    resumed = _step(compiled, 3)
    for key in ("state_dict", "optimizer_states", "global_step"):
        assert identical(resumed[key], uninterrupted[key]), key

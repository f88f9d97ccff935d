"""Evaluate a checkpoint: `python src/eval.py ckpt_path=outputs/.../checkpoints/best.ckpt`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("eval", "tasks.evaluate")

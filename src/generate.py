"""Sample from a trained language model:
`python src/generate.py ckpt_path=outputs/.../checkpoints/best.ckpt 'prompt="def "'`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("generate", "tasks.generate")

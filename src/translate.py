"""Translate with a trained sequence-to-sequence model:
`python src/translate.py ckpt_path=outputs/.../checkpoints/best.ckpt 'text="Is the server running?"' beam_size=5`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("translate", "tasks.translate")

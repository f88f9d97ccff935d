"""Transcribe audio files with a trained CTC model, or spot keywords with a keyword classifier:
`python src/transcribe.py ckpt_path=outputs/.../checkpoints/best.ckpt audio=clip.wav`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("transcribe", "tasks.transcribe")

"""Export a checkpoint, verified on its test split: `python src/export.py ckpt_path=... format=onnx|torch_export`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("export", "tasks.export")

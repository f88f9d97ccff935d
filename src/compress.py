"""Compress a checkpoint and report every variant: `python src/compress.py ckpt_path=... [compress=<method>]`."""

from dlforge.cli import run

if __name__ == "__main__":
    run("compress", "tasks.compress")

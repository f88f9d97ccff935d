"""Train a model: `python src/train.py model=vit trainer=ddp`. Configs live in conf/train.yaml."""

from dlforge.cli import run

if __name__ == "__main__":
    run("train", "tasks.train")

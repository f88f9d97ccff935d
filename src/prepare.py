"""Write a dataset into the data dir: `python src/prepare.py data=<name>`; `all=true` for every offline one."""

from dlforge.cli import run

if __name__ == "__main__":
    run("prepare", "tasks.prepare")

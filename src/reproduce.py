"""Repeat a run and compare its final metrics: `python src/reproduce.py outputs/train/runs/<run>`."""

import sys

from dlforge.tasks.reproduce import main

if __name__ == "__main__":
    sys.exit(main())

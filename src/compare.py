"""Compare runs on one page: `python src/compare.py outputs/train/runs/A outputs/train/runs/B ...`, or a multirun
or sweep dir."""

import sys

from dlforge.tasks.compare import main

if __name__ == "__main__":
    sys.exit(main())

"""Composing, checking and building configs: the signatures of the `_target_`s are the schema."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout: conf/, data.dvc, src/
CONF_DIR = ROOT / "conf"

"""Composing, checking and building configs: the signatures of the `_target_`s are the schema."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout: conf/, data.dvc, src/
CONF_DIR = ROOT / "conf"


def primary_groups(config_name: str) -> set[str]:
    """The config groups that `conf/<config_name>.yaml`'s defaults list names (Hydra's own group aside),
    whatever a run's config selects: a recorded config (reproduce.py's) selects none."""
    import yaml

    defaults = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text())["defaults"]
    names = (next(iter(entry)) for entry in defaults if isinstance(entry, dict))
    return {name.removeprefix("override ").removeprefix("optional ") for name in names} - {"hydra"}

"""`python src/train.py --params params.yaml`, which dvc.yaml's train stage runs: the overrides that compose conf/
into the params.yaml that `dvc exp run -S ...` composed (a whole DVC experiment is tests/data/test_dvc.py's)."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT

CASES = {  # what `dvc exp run -S` was given: what the train stage runs
    ("model=gpt", "trainer=ddp"): ["model=gpt", "trainer=ddp"],
    ("experiment=gettext_en_fr_transformer", "data.batch_size=32", "optimizer.lr=3e-4"): [
        "model=transformer_seq2seq",  # the experiment's own model: redundant, and composed all the same
        "experiment=gettext_en_fr_transformer",
        "data.batch_size=32",
        "optimizer.lr=0.0003",
    ],
}


@pytest.mark.parametrize("given", CASES, ids=" ".join)
def test_params_yaml_expands_into_overrides_that_compose_it(given, tmp_path, monkeypatch):
    from dvc.utils.hydra import compose_and_dump
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dlforge.config.params import expand_params

    for name in ("DLFORGE_ROOT", "DLFORGE_RUN_DIR"):  # as DVC composes it, and train.py expands it
        monkeypatch.delenv(name, raising=False)
    params = tmp_path / "params.yaml"
    compose_and_dump(params, str(ROOT / "conf"), None, "train", str(ROOT), list(given))
    argv = expand_params(["train.py", "--params", str(params), "hydra.run.dir=results/train"], ROOT / "conf", "train")
    assert argv == ["train.py", *CASES[given], "hydra.run.dir=results/train"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        composed = OmegaConf.to_container(compose("train", overrides=CASES[given]), resolve=True)
    assert composed == yaml.safe_load(params.read_text())

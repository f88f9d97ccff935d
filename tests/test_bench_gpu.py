"""bench/gpu.py on CPU: its refusal without CUDA, the peak table, the GPT-2 124M config and FLOPs, and its loops
at a tiny size (the GPU figures themselves need a GPU)."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # bench/ sits beside src/ and is not installed
from bench import gpu  # noqa: E402
from bench.run import compose, gpt_flops_per_token, gpt_params  # noqa: E402

TINY_GPT = {"depth": 1, "heads": 2, "dim": 32, "block_size": 16, "vocab_size": 128, "batch_size": 4}
TINY_VIT = {"image_size": 16, "patch_size": 8, "in_channels": 3, "dim": 32, "depth": 1, "heads": 2}


def test_refuses_without_cuda_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        gpu.main([])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: bench.gpu measures a CUDA GPU") and error.count("\n") == 1


def test_peak_table_names_the_chip_variants():
    names = {
        "NVIDIA H100 80GB HBM3": 989,
        "NVIDIA H100 PCIe": 756,
        "NVIDIA H200": 989,
        "NVIDIA A100-SXM4-80GB": 312,
        "NVIDIA L40S": 362,
        "NVIDIA L4": 121,
    }
    assert {name: gpu.peak_tflops(name) for name in names} == names
    assert gpu.peak_tflops("Tesla T4") is None


def test_gpt2_124m_config_and_its_flops(tmp_path):
    cfg = compose(gpu.gpt_overrides(gpu.GPT2_124M, str(tmp_path / "data")), tmp_path / "run")
    assert (cfg.model.net.depth, cfg.model.net.heads, cfg.model.net.dim, cfg.data.block_size) == (12, 12, 768, 1024)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.optimizer.fused
    params = gpt_params(cfg)
    assert params == 123_689_472  # nanoGPT's GPT-2 124M without its position embeddings: "123.69M"
    assert gpt_flops_per_token(cfg) == 6 * params + 12 * 12 * 768 * 1024


def test_mfu_is_model_flops_over_the_chips_peak():
    rows = [{"loop": "raw loop", "compile": True, "tokens_per_s": 100_000.0, "of_raw": 1.0}]
    table = gpu.report("NVIDIA H100 80GB HBM3", rows, flops_per_token=1e9, vit={False: 1.0, True: 2.0})
    assert "| raw loop | yes | 100000 | 100.0 | 10.1 % | 1.000 |" in table  # 1e14 FLOP/s of 989e12


def test_loops_run_at_a_tiny_size_on_cpu(tmp_path):
    rows = gpu.gpt_rows(TINY_GPT, str(tmp_path / "data"), warmup=1, steps=2, device="cpu", compiles=(False,))
    assert [row["loop"] for row in rows] == ["raw loop", "pipeline"]
    assert all(row["tokens_per_s"] > 0 for row in rows) and rows[0]["of_raw"] == 1
    assert gpu.vit_images_per_s(TINY_VIT, 4, warmup=1, steps=2, device="cpu", compile=False) > 0

"""The process settings every training and evaluation run applies (dlforge.runtime.tune_process), and how a
training run loads its libraries (dlforge.runtime.loading_libraries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

# Minor page faults per training step of the baby GPT, in a fresh interpreter, with glibc's defaults or
# after keep_freed_memory(): each fault is a 4 KiB page of activations handed back to the OS and taken again.
FAULTS_PER_STEP = """
import resource, sys, torch, torch.nn.functional as F
from dlforge.nets.text.gpt import GPT
if sys.argv[1] == "tuned":
    from dlforge.runtime import keep_freed_memory
    keep_freed_memory()
torch.manual_seed(0)
net = GPT(vocab_size=128, block_size=64)
optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
tokens = torch.randint(0, 128, (12, 64))
def step():
    F.cross_entropy(net(tokens).flatten(0, 1), tokens.flatten()).backward()
    optimizer.step()
    optimizer.zero_grad()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(mode: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout)


def test_freed_activations_are_reused_without_page_faults():
    default, tuned = _faults_per_step("default"), _faults_per_step("tuned")
    assert default > 100, default  # glibc's defaults fault on every step's activations here
    assert tuned < default / 5, (default, tuned)


def test_no_gpu_probe_per_optimizer_step():
    import lightning  # noqa: F401 - sets PYTORCH_NVML_BASED_CUDA_CHECK
    import torch

    from dlforge.runtime import tune_process

    tune_process()
    if not torch.cuda.is_available():  # NVML is probed by every Adam step only while the variable is set
        assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
    else:  # with GPUs the fork-safe check stays as Lightning set it
        assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


# In a fresh interpreter: a training run's start loads its libraries under `loading_libraries`, and a config
# error may end it there; a multirun's later job (Lightning already loaded) starts the same way.
LOADING_LIBRARIES = """
import gc, json, weakref
from dlforge.runtime import loading_libraries
try:
    with loading_libraries():
        import lightning, torchmetrics
        raise ValueError("a config error found after the imports")
except ValueError:
    pass
first = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}

class Job:
    pass
job = Job()
job.cycle = job  # an earlier job's model or trainer: garbage only a collection frees
left = weakref.ref(job)
del job
with loading_libraries():
    pass
gc.collect()
later = {"frozen": gc.get_freeze_count(), "job_collected": left() is None}
print(json.dumps({"first": first, "later": later}))
"""


def test_libraries_load_once_without_collections_walking_them_again():
    result = subprocess.run(
        [sys.executable, "-c", LOADING_LIBRARIES],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    first, later = outcome["first"], outcome["later"]
    assert first["enabled"]  # collecting again, the error notwithstanding
    assert first["frozen"] > 100_000, first  # torch, Lightning, torchmetrics: out of every later collection
    assert first["walked"] < 10_000, first  # what a full collection still walks
    assert later == {"frozen": first["frozen"], "job_collected": True}, later  # a later job's garbage still freed

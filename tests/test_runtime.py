"""The process settings every training and evaluation run applies (dlforge.runtime.tune_process), and how a
training run loads its libraries (dlforge.runtime.loading_libraries)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

# A training step's activations, in a fresh interpreter, with glibc's defaults or after keep_freed_memory():
# four 16 MiB tensors held through the step and freed after it. Reported per step: how many blocks glibc
# gave their own mmap (handed back to the OS on free), and the page faults (a 4 KiB page touched anew each).
# Whether glibc's defaults also trim the heap, and so fault on later steps, depends on its layout and varies
# from run to run (with Python's hash seed among others); the mmap of the first step does not: after torch's
# import glibc maps every block above ~2 MiB.
FREED_ACTIVATIONS = """
import ctypes, json, resource, sys, torch
if sys.argv[1] == "tuned":
    from dlforge.runtime import keep_freed_memory
    keep_freed_memory()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
outcome = {"mapped": [], "faults": []}
for _ in range(12):
    mapped, faults = libc.mallinfo2().hblks, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    activations = [torch.empty(4 << 20).fill_(1.0) for _ in range(4)]
    outcome["mapped"].append(libc.mallinfo2().hblks - mapped)
    del activations
    outcome["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
outcome["kept"] = libc.mallinfo2().fordblks
print(json.dumps(outcome))
"""


def _freed_activations(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", FREED_ACTIVATIONS, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_freed_activations_are_reused_without_page_faults():
    default, tuned = _freed_activations("default"), _freed_activations("tuned")
    assert default["mapped"][0] == 4, default  # glibc's default: each block mapped, unmapped on free
    assert tuned["mapped"] == [0] * 12, tuned  # all of them in the heap
    assert tuned["faults"][6:] == [0] * 6, tuned  # once the heap has grown to fit a step, every page is reused
    assert tuned["kept"] >= 64 << 20, tuned  # the freed activations stay with the process


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

"""Optuna sweeps (dlforge.sweeps.study and its Hydra sweeper), multirun x DDP, launchers and multi-node DDP.

The search-space and queue logic runs in-process with a stand-in launcher; the rest runs the scripts
as a user does, with trials of a few batches.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import CONF_DIR, ROOT, assert_ok, compose, read_metrics, script_env
from dlforge.config.build import build_datamodule, build_model
from dlforge.config.checks import check_targets
from dlforge.errors import ConfigError
from dlforge.sweeps.storage import open_storage
from dlforge.sweeps.study import parse_search_space, run_study, suggest_overrides

HPARAMS_SEARCH = sorted(path.stem for path in (CONF_DIR / "hparams_search").glob("*.yaml"))


# --- the study logic, with a stand-in launcher -------------------------------------------------


def quadratic_launcher(batch, initial_job_idx):
    """Jobs that return -(x - 1)^2 (+1 when kind=b) instead of training."""
    results = []
    for overrides in batch:
        values = dict(override.split("=", 1) for override in overrides if not override.startswith(("+", "hydra.")))
        result = JobReturn()
        result.status = JobStatus.COMPLETED
        result.return_value = -((float(values["x"]) - 1) ** 2) + (values.get("kind") == "b")
        results.append(result)
    return results


def study_settings(**changes):
    settings = dict(
        study_name="s",
        storage=None,
        direction="maximize",
        n_trials=8,
        n_jobs=2,
        sampler={"_target_": "optuna.samplers.TPESampler", "seed": 0},
        pruner=None,
        heartbeat_interval=30,
        params={"x": {"low": -3.0, "high": 3.0}, "kind": {"choices": ["a", "b"]}},
    )
    return {**settings, **changes}


def sweep_config(sweep_dir: Path):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_study_runs_queued_trials_and_writes_results(tmp_path):
    params = {
        "x": {"low": -3.0, "high": 3.0},
        "lr": {"low": 1.0e-5, "high": 1.0e-1, "log": True},
        "depth": {"low": 2, "high": 8, "step": 2},
        "kind": {"choices": ["a", "b"]},
        "momentum": {"low": 0.5, "high": 0.99, "when": {"kind": "b"}},
    }
    study = run_study(sweep_config(tmp_path), study_settings(params=params), [], quadratic_launcher, lambda batch: None)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    for trial in trials:
        assert 1.0e-5 <= trial.params["lr"] <= 1.0e-1 and trial.params["depth"] in (2, 4, 6, 8)
        assert ("momentum" in trial.params) == (trial.params["kind"] == "b")  # conditional
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 8
    best = OmegaConf.load(tmp_path / "best.yaml")
    assert best.best.value == study.best_value and best.trials.complete == 8
    assert f"x={study.best_params['x']!r}" in best.best.overrides
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 9
    for plot in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (tmp_path / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_study_and_more_trials_continue_it(tmp_path):
    first = [
        t.params
        for t in run_study(
            sweep_config(tmp_path / "a"), study_settings(n_trials=4), [], quadratic_launcher, lambda b: None
        ).trials
    ]
    second = [
        t.params
        for t in run_study(
            sweep_config(tmp_path / "b"), study_settings(n_trials=4, n_jobs=1), [], quadratic_launcher, lambda b: None
        ).trials
    ]
    assert first == second  # seeded per trial, however the trials were batched
    more = run_study(sweep_config(tmp_path / "a"), study_settings(n_trials=6), [], quadratic_launcher, lambda b: None)
    assert [t.params for t in more.trials[:4]] == first and len(more.trials) == 6


@pytest.mark.parametrize("sampler", ["optuna.samplers.CmaEsSampler", "optuna.samplers.GridSampler"])
def test_cmaes_and_grid_samplers(sampler, tmp_path):
    params = {"x": {"low": -2, "high": 2}, "kind": {"choices": ["a", "b"]}}
    settings = study_settings(sampler={"_target_": sampler}, params=params, n_trials=6)
    study = run_study(sweep_config(tmp_path), settings, [], quadratic_launcher, lambda b: None)
    points = [(t.params["x"], t.params["kind"]) for t in study.trials]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    if sampler.endswith("GridSampler"):  # every point exactly once, whatever n_trials says
        assert sorted(points) == sorted((x, kind) for x in range(-2, 3) for kind in "ab")
        assert study.best_params == {"x": 1, "kind": "b"}
    else:
        assert len(points) == 6


def test_command_line_comma_lists_are_categorical_params(tmp_path):
    settings = study_settings(params={"x": {"low": 0.0, "high": 2.0}}, n_trials=4)
    study = run_study(sweep_config(tmp_path), settings, ["kind=a,b", "other=1"], quadratic_launcher, lambda b: None)
    assert {t.params["kind"] for t in study.trials} <= {"a", "b"}
    assert all(t.user_attrs["overrides"][-1].startswith("kind=") for t in study.trials)


@pytest.mark.parametrize(
    "params,message",
    [
        ({"x": {"low": 1}}, "give either choices, or low and high"),
        ({"x": {"choices": [1], "low": 0, "high": 1}}, "give either choices, or low and high"),
        ({"x": {"low": 0, "high": 1, "scale": "log"}}, "expected a mapping with keys among"),
        ({"x": {"choices": []}}, "x.choices: expected a non-empty list"),
        ({"x": {"low": 0, "high": 1, "when": {"y": 1}}, "y": {"choices": [1]}}, "y must be params listed before x"),
    ],
)
def test_bad_search_space_is_a_config_error(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_search_space(params)


@pytest.mark.parametrize("key", ["n_trials", "n_jobs"])
def test_a_study_of_no_trials_is_a_config_error(key, tmp_path):
    with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}: -1 is out of range; allowed: >= 1"):
        run_study(sweep_config(tmp_path), study_settings(**{key: -1}), [], quadratic_launcher, lambda b: None)
    assert not (tmp_path / "optuna.db").exists()


def test_direction_of_an_existing_study_cannot_change(tmp_path):
    run_study(sweep_config(tmp_path), study_settings(n_trials=1), [], quadratic_launcher, lambda b: None)
    with pytest.raises(ConfigError, match="study 's' was created to maximize"):
        run_study(sweep_config(tmp_path), study_settings(direction="minimize"), [], quadratic_launcher, lambda b: None)


@pytest.mark.parametrize("name", HPARAMS_SEARCH)
def test_hparams_search_trials_compose_and_build(name, tmp_path):
    """A trial of every search config: its params are config keys, and the model and data build."""
    cfg = compose("train", [f"hparams_search={name}", f"paths.log_dir={tmp_path}"], tmp_path / "run")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and "sweeps" in cfg.hydra.sweep.dir
    space = parse_search_space(cfg.hydra.sweeper.params)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    overrides = suggest_overrides(trial, space)
    trial_cfg = compose("train", [f"hparams_search={name}", f"paths.log_dir={tmp_path}", *overrides], tmp_path / "run")
    check_targets(trial_cfg.model)  # composing failed already if a param were not a config key
    build_model(trial_cfg)
    build_datamodule(trial_cfg)


def test_slurm_and_joblib_launcher_configs_compose(tmp_path):
    slurm = compose("train", ["hydra/launcher=slurm", "trainer=ddp", f"paths.log_dir={tmp_path}"], tmp_path / "run")
    launcher = OmegaConf.to_container(slurm.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["tasks_per_node"] == 2
    joblib = compose("train", ["hydra/launcher=joblib", f"paths.log_dir={tmp_path}"], tmp_path / "run")
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher")


# --- a real PostgreSQL server, and sweeps through the scripts ------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of Debian's package on loopback, in a temporary data dir."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin")) + [os.path.dirname(shutil.which("initdb") or "")]
    bin_dir = next((path for path in binaries if os.path.exists(os.path.join(path, "pg_ctl"))), None)
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it with apt-get")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    data_dir = tempfile.mkdtemp(prefix="dlforge-pg-")
    if as_owner:
        shutil.chown(data_dir, "postgres")
    port = free_port()
    subprocess.run(
        [*as_owner, f"{bin_dir}/initdb", "-D", data_dir, "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data_dir}"
    subprocess.run(
        [*as_owner, f"{bin_dir}/pg_ctl", "-D", data_dir, "-o", options, "-l", f"{data_dir}/log", "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_owner, f"{bin_dir}/pg_ctl", "-D", data_dir, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


TINY_TRIAL = ("debug=limit_batches", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=none")


def sweep_command(log_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "src" / "train.py"), "-m", f"paths.log_dir={log_dir}", *overrides]


def run_sweep(log_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_command(log_dir, *overrides),
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=script_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def load_study(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def describe(trials) -> str:
    return "\n".join(f"{t.number} {t.state.name} {t.value} {t.user_attrs} {t.system_attrs}" for t in trials)


def test_two_workers_share_a_postgres_study(postgres_url, tmp_path):
    command = sweep_command(
        tmp_path,
        "hparams_search=cnn_optuna",
        *TINY_TRIAL,
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={postgres_url}",
    )
    workers = [start(command) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    trials = load_study(postgres_url, "cnn_digits").get_trials()
    assert [t.state for t in trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)] == [], describe(trials)
    assert len(trials) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # per-trial seeds: no duplicate draws
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    for trial in trials:  # each job reported its validation to its own trial
        assert len(trial.intermediate_values) == 1
        assert (Path(trial.user_attrs["run_dir"]) / ".hydra" / "overrides.yaml").exists()


def finished(trials) -> list:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def trials_so_far(storage: str) -> list:
    if not Path(storage.removeprefix("sqlite:///")).exists():
        return []
    try:
        return load_study(storage, "cnn_digits").get_trials()
    except KeyError:  # the study is not created yet
        return []


def _open_when_released(url: str, barrier, outcomes) -> None:
    barrier.wait()
    try:
        open_storage(url)
        outcomes.put("opened")
    except Exception as error:  # noqa: BLE001 - reported to the test
        outcomes.put(f"{type(error).__name__}: {error}".splitlines()[0])


def test_workers_opening_a_new_sqlite_study_together_all_start(tmp_path):
    # Without the retry, 35 of 60 workers (15 rounds of 4) failed: "table studies already exists".
    import multiprocessing

    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(5):
        barrier, queue = context.Barrier(4), context.Queue()
        url = f"sqlite:///{tmp_path / f'round{round_}.db'}"
        workers = [context.Process(target=_open_when_released, args=(url, barrier, queue)) for _ in range(4)]
        for worker in workers:
            worker.start()
        outcomes += [queue.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join()
    assert outcomes == ["opened"] * 20, outcomes


def test_killed_sweep_continues_where_it_stopped(tmp_path):
    command = sweep_command(
        tmp_path,
        "hparams_search=cnn_optuna",
        *TINY_TRIAL,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.heartbeat_interval=1",
    )
    storage = f"sqlite:///{tmp_path / 'train' / 'sweeps' / 'cnn_digits' / 'optuna.db'}"
    first = start(command)
    try:  # kill it in the middle of its second trial
        while not (
            len(finished(trials := trials_so_far(storage))) == 1 and any(t.state == TrialState.RUNNING for t in trials)
        ):
            assert first.poll() is None, first.communicate()[0][-3000:]
            time.sleep(0.05)  # the second trial of a tiny sweep lasts about a second
    finally:
        with contextlib.suppress(ProcessLookupError):  # it ended by itself: the assert above says how
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert_ok(run_sweep(tmp_path, *command[4:]))  # the same command again
    trials = load_study(storage, "cnn_digits").get_trials()
    done = finished(trials)
    assert len(done) == 3, describe(trials)
    (interrupted,) = [t for t in trials if t.state == TrialState.FAIL]  # its worker died: re-queued, not counted
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == interrupted.number]
    # The retry keeps every value drawn before the kill (which may land while the trial is still drawing).
    assert retry in done and interrupted.params.items() <= retry.params.items()
    workers = [t.user_attrs["worker"] for t in done]
    assert workers.count(workers[0]) == 1 and len(set(workers)) == 2  # one trial before the kill, two after
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 3


def test_pruning_stops_hopeless_trials_under_ddp(tmp_path):
    """A grid of a good and a hopeless learning rate: the median pruner stops the second after its first
    epoch. Both DDP ranks of each trial train and test the trial's params, in the trial's dir: rank 1 of each
    job runs that job (not a sweep of its own)."""
    result = run_sweep(
        tmp_path,
        "hydra/sweeper=dlforge_optuna",
        "hydra.sweeper.study_name=prune",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.sampler={_target_:optuna.samplers.GridSampler}",
        "hydra.sweeper.pruner={_target_:optuna.pruners.MedianPruner,n_startup_trials:1,n_warmup_steps:0}",
        "optimizer.lr=3e-3,1e-9",
        "trainer=ddp",
        "trainer.max_epochs=3",
        "logger=wandb",
    )
    assert_ok(result)
    assert not (tmp_path / "train" / "runs").exists()  # no rank wrote a run of its own
    trials = load_study(f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}", "prune").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED], describe(trials)
    assert [len(t.intermediate_values) for t in trials] == [3, 1]  # epochs run
    assert trials[0].value > 0.9 and trials[1].user_attrs["pruned_at"].startswith("epoch 0: val/acc=")
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.name == f"trial_{trial.number}"
        rank_1_log = (run_dir / "train_ddp_process_1.log").read_text()
        assert f"DDP rank 1 of job: {' '.join(OmegaConf.load(run_dir / '.hydra' / 'overrides.yaml'))}\n" in rank_1_log
        assert f"optimizer.lr={trial.params['optimizer.lr']!r}" in rank_1_log
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run per trial, from rank 0
        assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").logger.wandb.group == "prune"
    completed, pruned = (read_metrics(Path(trial.user_attrs["run_dir"])) for trial in trials)
    # the 359 test images, each tested once on one of the 2 ranks: both ranks tested the same model
    assert sum(map(sum, completed["test/confusion_matrix"])) == 359
    assert pruned["best val/acc"] == trials[1].intermediate_values[0] and "test/acc" not in pruned  # pruned: untested


def test_two_nodes_on_loopback(tmp_path):
    """torchrun on two "nodes" of one process each, as on two machines: trainer.num_nodes=2."""
    port = free_port()
    nodes = [
        start(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(ROOT / "src" / "train.py"),
                f"paths.log_dir={tmp_path / f'node{rank}'}",
                "trainer=ddp",
                "trainer.devices=1",
                "trainer.num_nodes=2",
                "debug=limit_batches",
                "trainer.max_epochs=1",
                "logger=none",
            ]
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    (run_0,), (run_1,) = [list((tmp_path / f"node{rank}" / "train" / "runs").iterdir()) for rank in range(2)]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_1 / "train.log").read_text()
    assert sum(map(sum, read_metrics(run_0)["test/confusion_matrix"])) == 359  # both nodes tested, each image once
    assert not (run_1 / "metrics.json").exists()  # global rank 0 reports


def test_trials_as_submitit_jobs(tmp_path):
    """hydra/launcher=submitit_local runs each trial in a process of its own (as SLURM would): the job
    still finds its trial and reports to it."""
    result = run_sweep(
        tmp_path,
        "hparams_search=cnn_optuna",
        *TINY_TRIAL,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
    )
    assert_ok(result)
    sweep_dir = tmp_path / "train" / "sweeps" / "cnn_digits"
    trials = load_study(f"sqlite:///{sweep_dir / 'optuna.db'}", "cnn_digits").get_trials()
    assert len(finished(trials)) == 2 and all(len(t.intermediate_values) == 1 for t in trials), describe(trials)
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2

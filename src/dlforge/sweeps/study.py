"""Optuna studies behind `python src/train.py -m hparams_search=<name>` (the Hydra sweeper in
src/hydra_plugins/dlforge_optuna_sweeper hands its work to `run_study`).

A study lives in a storage: a SQLite file in the sweep dir by default, or any SQLAlchemy URL
(`postgresql://...`) that workers on several machines share. Its trials are a queue: whoever creates
the study queues `n_trials` trials, and every worker -- this process, or another one started with the
same command and storage -- takes queued trials one at a time. Taking is atomic in the database, so
workers never run a trial twice or run more than `n_trials`, and re-running an interrupted command
continues the same study. Workers heartbeat the trials they run; a trial whose worker died goes
stale and is queued again with the same parameters.

The search space (`hydra.sweeper.params`) maps a config key (or a config group) to one of
    {choices: [64, 128]}                         categorical; a choice is an override value, so "[32,64]" is a list
    {low: 2, high: 6}                            int when both bounds are ints (optional step, log)
    {low: 1.0e-4, high: 1.0e-2, log: true}       float (optional step)
    {..., when: {optimizer: sgd}}                only suggested when earlier params have these values
Comma lists on the command line (`model.net.depth=2,4`) become categorical params too.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from dlforge.config.checks import check_targets
from dlforge.config.secrets import mask_urls
from dlforge.errors import ConfigError, TrainingDiverged
from dlforge.files import replacing
from dlforge.sweeps.storage import open_storage
from dlforge.sweeps.trial import job_settings

log = logging.getLogger(__name__)

FAILURE = "failure"  # user attr of a trial that ran and failed; trials of a dead worker have none
QUEUE_SIZE = "queue_size"  # study user attr: trials queued so far (re-queued ones aside), set once queued
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_SECONDS = 2.0  # how often a worker with nothing to take looks for re-queued trials


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple | None = None
    when: Mapping[str, Any] = field(default_factory=dict)

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        return all(key in chosen and chosen[key] in _as_list(allowed) for key, allowed in self.when.items())

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def grid(self, name: str) -> list:
        if self.choices is not None:
            return list(self.choices)
        step = self.step or (1 if isinstance(self.low, int) and isinstance(self.high, int) else None)
        if step is None or self.log:
            raise ConfigError(f"hydra.sweeper.params.{name}: a grid needs choices, ints, or floats with a step")
        return [self.low + index * step for index in range(int(round((self.high - self.low) / step)) + 1)]


def parse_search_space(
    params: Mapping[str, Any],
    sweep_arguments: Mapping[str, list] | None = None,
) -> dict[str, Param]:
    """The `params` config (plus categorical command-line sweeps) as Params, in suggestion order."""
    allowed = {"low", "high", "step", "log", "choices", "when"}
    space = {}
    for name, spec in params.items():
        where = f"hydra.sweeper.params.{name}"
        spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
        if not isinstance(spec, dict) or not spec.keys() <= allowed:
            raise ConfigError(f"{where}: expected a mapping with keys among {', '.join(sorted(allowed))}, got {spec!r}")
        bounds = {"low", "high"} & spec.keys()
        if ("choices" in spec and bounds) or ("choices" not in spec and len(bounds) < 2):
            raise ConfigError(f"{where}: give either choices, or low and high")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise ConfigError(f"{where}.choices: expected a non-empty list")
            spec["choices"] = tuple(spec["choices"])
        elif not all(type(spec[bound]) in (int, float) for bound in ("low", "high")):
            raise ConfigError(f"{where}: low and high must both be numbers")
        unknown = set(spec.get("when", {})) - set(space)
        if unknown:
            raise ConfigError(f"{where}.when: {', '.join(sorted(unknown))} must be params listed before {name}")
        space[name] = Param(**spec)
    for name, choices in (sweep_arguments or {}).items():
        space[name] = Param(choices=tuple(choices))
    return space


def suggest_overrides(trial: optuna.Trial, space: Mapping[str, Param]) -> list[str]:
    """Suggest the trial's params in order and return them as Hydra overrides."""
    chosen = {}
    for name, param in space.items():
        if param.applies(chosen):
            chosen[name] = param.suggest(trial, name)
    return [f"{name}={_override_value(value)}" for name, value in chosen.items()]


def run_study(
    config: DictConfig,
    settings: Mapping[str, Any],
    arguments: Sequence[str],
    launch: Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]],
    validate: Callable[[Sequence[Sequence[str]]], None],
    config_loader: Any = None,
) -> optuna.Study:
    """Run queued trials of the study until it has `n_trials` finished ones, then write its results.
    `launch` and `validate` are the Hydra launcher's and sweeper's; `arguments` the command's overrides."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, plots
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = OmegaConf.create(dict(settings))
    if settings.direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"hydra.sweeper.direction: {settings.direction!r} is not allowed; choose one of: maximize, minimize"
        )
    for key in ("n_trials", "n_jobs"):  # a study of no trials would end at once, "successfully", with empty plots
        if settings[key] < 1:
            raise ConfigError(f"hydra.sweeper.{key}: {settings[key]} is out of range; allowed: >= 1")
    check_targets(OmegaConf.create({"hydra": {"sweeper": {"sampler": settings.sampler, "pruner": settings.pruner}}}))
    fixed_arguments, sweep_arguments = _split_arguments(arguments, config_loader)
    space = parse_search_space(settings.params, sweep_arguments)
    if not space:
        raise ConfigError("hydra.sweeper.params: the search space is empty")
    grid_points = []
    if _is_grid(settings.sampler):
        if any(param.when for param in space.values()):
            raise ConfigError("hydra.sweeper.params: a grid cannot have conditional (`when`) params")
        axes = [param.grid(name) for name, param in space.items()]
        grid_points = [dict(zip(space, point)) for point in product(*axes)]
    n_trials = len(grid_points) or settings.n_trials

    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "multirun.yaml").write_text(mask_urls(OmegaConf.to_yaml(config)))  # no storage password
    storage_url = settings.storage or f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
    storage = open_storage(storage_url, settings.heartbeat_interval)
    study = _create_or_load(settings.study_name, storage, settings.direction, n_trials, grid_points)
    log.info(
        f"study {study.study_name!r} in {mask_urls(storage_url)}: "
        f"{_count_finished(study)} of {n_trials} trials finished"
    )
    with _Heartbeat(storage, settings.heartbeat_interval) as heartbeat:
        worker = _Worker(
            study,
            storage,
            space,
            settings.sampler,
            fixed_arguments,
            sweep_dir,
            storage_url,
            OmegaConf.select(config, "logger.wandb"),
            launch,
            validate,
            heartbeat,
        )
        worker.run(n_trials, settings.n_jobs)
    write_results(study, sweep_dir, storage_url)
    return study


class _Worker:
    """This process's share of a study: take queued trials, run them as Hydra jobs, record outcomes."""

    def __init__(
        self,
        study,
        storage,
        space,
        sampler,
        fixed_arguments,
        sweep_dir,
        storage_url,
        wandb,
        launch,
        validate,
        heartbeat,
    ):
        self.study, self.storage, self.space, self.sampler = study, storage, space, sampler
        self.fixed_arguments = fixed_arguments
        self.sweep_dir, self.storage_url, self.wandb = sweep_dir, storage_url, wandb
        self.launch, self.validate, self.heartbeat = launch, validate, heartbeat
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, n_trials: int, n_jobs: int) -> None:
        study = self.study
        while (finished := _count_finished(study)) < n_trials:
            optuna.storages.fail_stale_trials(study)  # re-queues the trials of dead workers
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            batch = []
            while len(batch) < min(n_jobs, n_trials - finished - running) and (taken := self._take()) is not None:
                batch.append(taken)
            if batch:
                self._run(batch)
                write_results(study, self.sweep_dir, self.storage_url, plots=False)
            elif study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
                time.sleep(POLL_SECONDS)  # other workers run the last trials (or died: theirs get re-queued)
            else:
                log.warning(f"study {study.study_name!r}: nothing left to run, {finished} of {n_trials} finished")
                return

    def _take(self) -> tuple[optuna.Trial, list[str]] | None:
        """Start the next queued trial and suggest its params (as overrides), or None. Never creates a
        trial (study.ask would, when the queue is empty): that keeps parallel workers at `n_trials`."""
        trial_id = _pop_queued_trial_id(self.study)
        if trial_id is None:
            return None
        self.heartbeat.start(trial_id)
        number = self.storage.get_trial_number_from_id(trial_id)
        # Seeded per trial: a study is reproducible, and parallel workers draw different params.
        if self.sampler is None or _is_grid(self.sampler):  # TPE (a grid's trials are queued with their params)
            self.study.sampler = optuna.samplers.TPESampler(seed=number)
        elif self.sampler.get("seed") is not None:
            self.study.sampler = instantiate(self.sampler, seed=self.sampler.seed + number)
        else:
            self.study.sampler = instantiate(self.sampler)
        trial = optuna.Trial(self.study, trial_id)
        return trial, suggest_overrides(trial, self.space)

    def _run(self, taken: list[tuple[optuna.Trial, list[str]]]) -> None:
        """Launch the trials as one batch of Hydra jobs and record their outcomes."""
        trials, batch = [trial for trial, _ in taken], []
        for trial, params in taken:
            run_dir = self.sweep_dir / f"trial_{trial.number}"
            for key, value in {"overrides": params, "worker": self.name, "run_dir": str(run_dir)}.items():
                trial.set_user_attr(key, value)
            batch.append([*self.fixed_arguments, *params, *self._channel(trial, run_dir)])
        try:
            self.validate(batch)
            results = self.launch(batch, trials[0].number)
        except Exception as error:  # e.g. a config error in the command: every trial would fail alike
            for trial in trials:
                self._fail(trial, error)
            raise
        except BaseException:  # interrupted (Ctrl-C): queue the trials again for the next run
            for trial in trials:
                self._requeue(trial)
            raise
        finally:
            self.heartbeat.stop([_trial_id(trial) for trial in trials])
        self._record(trials, results)

    def _channel(self, trial: optuna.Trial, run_dir: Path) -> list[str]:
        """Hydra overrides that put the trial in its own dir, tell the job which trial it is (so that it
        reports to it, see dlforge.sweeps.trial) and make its W&B run one of the study's group."""
        environment = job_settings(self.storage_url, self.study.study_name, _trial_id(trial))
        overrides = [
            f"hydra.sweep.subdir={run_dir.name}",
            *(f"+hydra.job.env_set.{name}={_quoted(value)}" for name, value in environment.items()),
        ]
        if self.wandb is not None and self.wandb.get("group") is None:
            overrides.append(f"logger.wandb.group={_quoted(self.study.study_name)}")
        if self.wandb is not None and self.wandb.get("name") is None:
            run_name = f"{self.study.study_name}-trial{trial.number}"
            overrides.append(f"logger.wandb.name={_quoted(run_name)}")
        return overrides

    def _record(self, trials: list[optuna.Trial], results: Sequence[JobReturn]) -> None:
        """Tell the study each job's outcome; a job that failed other than by diverging stops the sweep."""
        unexpected = None
        for trial, result in zip(trials, results):
            if result.status == JobStatus.COMPLETED:
                value = result.return_value
                if value is None:  # every trial would: e.g. fast_dev_run, which tracks no best checkpoint
                    self._fail(trial, "the task returned no value to optimise")
                    unexpected = unexpected or ConfigError(
                        "the task returned no value to optimise (is the monitored metric logged and checkpointed?)"
                    )
                elif math.isfinite(value):
                    self._tell(trial, state=TrialState.COMPLETE, values=value)
                    log.info(f"trial {trial.number}: {value:.6g}")
                else:
                    self._fail(trial, f"the task returned {value}")
                continue
            error = _job_error(result)
            if isinstance(error, optuna.TrialPruned):
                self._tell(trial, state=TrialState.PRUNED)
                log.info(f"trial {trial.number}: {error}")
            else:
                self._fail(trial, error)
                if not isinstance(error, TrainingDiverged):  # diverging is an outcome of the trial's params
                    unexpected = unexpected or error
        if unexpected is not None:
            raise unexpected

    def _fail(self, trial: optuna.Trial, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        log.warning(f"trial {trial.number} failed: {reason}")
        self.storage.set_trial_user_attr(_trial_id(trial), FAILURE, reason)
        self._tell(trial, state=TrialState.FAIL)

    def _requeue(self, trial: optuna.Trial) -> None:
        self.storage.set_trial_state_values(_trial_id(trial), state=TrialState.FAIL)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(self.study, self.storage.get_trial(_trial_id(trial)))

    def _tell(self, trial: optuna.Trial, **outcome) -> None:
        try:
            self.study.tell(trial, **outcome)
        except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat came late: another worker re-queued it
            log.warning(f"trial {trial.number} had been declared dead and re-queued; this result is dropped")


class _Heartbeat:
    """Records a heartbeat for the trials this worker runs, from a thread, so that they do not go stale
    while a job trains; when a worker is killed its trials stop beating and get re-queued."""

    def __init__(self, storage, interval: int) -> None:
        self._storage, self._interval = storage, interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closed.set()
        self._thread.join()

    def start(self, trial_id: int) -> None:
        self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._trial_ids.add(trial_id)

    def stop(self, trial_ids: Sequence[int]) -> None:
        with self._lock:
            self._trial_ids.difference_update(trial_ids)

    def _beat(self) -> None:
        while not self._closed.wait(self._interval):
            with self._lock:
                for trial_id in self._trial_ids:
                    self._storage.record_heartbeat(trial_id)


def _split_arguments(arguments: Sequence[str], config_loader: Any) -> tuple[list[str], dict[str, list]]:
    """Command-line overrides passed to every trial, and comma-list sweeps that become categorical params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    fixed, sweeps = [], {}
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(list(arguments)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{key}={override.get_value_element_as_str()}")
        elif override.is_discrete_sweep():  # numbers stay numbers (for plots); lists, quoted strings stay overrides
            values = override.sweep_iterator(transformer=Transformer.identity)
            sweeps[key] = [
                value if type(value) in (int, float, bool, str) else text
                for value, text in zip(values, override.sweep_string_iterator())
            ]
        else:
            raise ConfigError(f"{key}: only comma lists sweep on the command line; put ranges in hydra.sweeper.params")
    return fixed, sweeps


def _is_grid(sampler: DictConfig | None) -> bool:
    return sampler is not None and get_class(sampler._target_) is optuna.samplers.GridSampler


def _create_or_load(name: str, storage, direction: str, n_trials: int, grid_points: list[dict]) -> optuna.Study:
    """The study, with its trials queued: all grid points, or `n_trials` to be sampled. The worker that
    creates the study queues them; a study continued with a larger `n_trials` gets the difference."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"hydra.sweeper.direction={direction}, but study {name!r} was created to "
                f"{study.direction.name.lower()}; give the new study another hydra.sweeper.study_name"
            ) from None
        _wait_for_queue(study)
    queued = study.user_attrs.get(QUEUE_SIZE)
    if queued is None:  # its creator died while queuing: count what it queued
        trials = study.get_trials(deepcopy=False)
        queued = sum(t.state != TrialState.FAIL or FAILURE in t.user_attrs for t in trials)
    for params in grid_points[queued:] if grid_points else [{}] * (n_trials - queued):
        study.enqueue_trial(params)
    study.set_user_attr(QUEUE_SIZE, max(queued, n_trials))
    return study


def _wait_for_queue(study: optuna.Study, timeout: float = 60.0) -> None:
    """A worker started together with the study's creator waits until the creator has queued the
    trials (queuing them as well would double the study)."""
    deadline = time.monotonic() + timeout
    while QUEUE_SIZE not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)


def _count_finished(study: optuna.Study) -> int:
    return sum(t.state in FINISHED or FAILURE in t.user_attrs for t in study.get_trials(deepcopy=False))


def write_results(study: optuna.Study, sweep_dir: Path, storage_url: str, plots: bool = True) -> None:
    """`best.yaml`, `trials.csv` and (with plots) PNG plots of the study in the sweep dir."""
    import yaml

    trials = study.get_trials(deepcopy=False)
    counts = {
        state.name.lower(): sum(t.state == state for t in trials) for state in TrialState if state != TrialState.WAITING
    }
    summary = {
        "study": study.study_name,
        "storage": mask_urls(storage_url),
        "direction": study.direction.name.lower(),
        "trials": counts,
    }
    if counts["complete"]:
        best = study.best_trial
        summary["best"] = {
            "trial": best.number,
            "value": best.value,
            "overrides": best.user_attrs.get("overrides"),
            "run_dir": best.user_attrs.get("run_dir"),
        }
    with replacing(sweep_dir / "best.yaml", "w") as file:  # workers sharing a sweep dir each rewrite the results
        yaml.safe_dump(summary, file, sort_keys=False)
    param_names = sorted({name for trial in trials for name in trial.params})
    with replacing(sweep_dir / "trials.csv", "w") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", "epochs_reported", "seconds", *param_names, "worker", FAILURE])
        for trial in trials:
            seconds = trial.duration.total_seconds() if trial.duration else None
            writer.writerow(
                [
                    trial.number,
                    trial.state.name,
                    trial.value,
                    len(trial.intermediate_values),
                    seconds,
                    *(trial.params.get(name) for name in param_names),
                    trial.user_attrs.get("worker"),
                    trial.user_attrs.get(FAILURE),
                ]
            )
    if plots:
        _plot(study, sweep_dir)
    if plots and counts["complete"]:
        log.info(
            f"best of {study.study_name!r}: trial {best.number}, value {best.value:.6g}, "
            f"{' '.join(best.user_attrs.get('overrides', []))}; results in {sweep_dir}"
        )


def _plot(study: optuna.Study, sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    wanted = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
    }
    if any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
        wanted["intermediate_values"] = plots.plot_intermediate_values  # the epochs of each trial, pruned or not
    for name, plot in wanted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" warnings, and empty plots of tiny studies
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. importances of < 2 complete trials
                log.info(f"no {name} plot: {error}")
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        with replacing(sweep_dir / f"{name}.png") as file:
            figure.savefig(file, format="png", dpi=120, bbox_inches="tight")
        plt.close(figure)


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _pop_queued_trial_id(study: optuna.Study) -> int | None:
    """Start the oldest queued (WAITING) trial and return its id, or None when the queue is empty. Atomic:
    a row lock on the trial in the database, so two workers never start the same trial."""
    # optuna 5.0: private Study._pop_waiting_trial_id, the first half of `ask` without its trial creation
    return study._pop_waiting_trial_id()


def _trial_id(trial: optuna.Trial) -> int:
    # optuna 5.0: private Trial._trial_id, the storage's key of the trial (`number` counts within a study)
    return trial._trial_id


def _job_error(result: JobReturn) -> BaseException:
    """The exception a failed Hydra job raised."""
    # hydra 1.3: private JobReturn._return_value; the public `return_value` re-raises it and prints to stderr
    return result._return_value

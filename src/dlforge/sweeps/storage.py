"""Where a study lives: an Optuna storage behind a SQLAlchemy URL (a SQLite file in the sweep dir by
default, or a database such as PostgreSQL that workers on several machines share). Opened by the
sweeper (`dlforge.sweeps.study`) and by each trial's job (`dlforge.sweeps.trial`)."""

from __future__ import annotations

import time

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url


def open_storage(url: str, heartbeat_interval: int | None = None) -> optuna.storages.RDBStorage:
    """An Optuna storage for a SQLAlchemy URL; with a heartbeat interval, stale trials are re-queued."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # psycopg 3 is installed, not SQLAlchemy's default psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine_kwargs = {"connect_args": {"timeout": 60}} if parsed.drivername == "sqlite" else {}  # wait for other writers
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback() if heartbeat_interval else None
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                heartbeat_stale_trial_callback=retry,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as error:
            # Workers starting together race to create the tables of a new database: one of them then
            # finds a table (PostgreSQL: a type) created under it, "already exists" (SQLite).
            racing = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error)
            if not racing or attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable: the last attempt returns or raises")

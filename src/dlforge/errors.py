"""Errors caused by the user's input. The entry scripts print them as one line and exit with 2."""

from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix: bad config, missing or corrupt data or checkpoint, diverged run."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class TrainingDiverged(UserError):
    pass


class DiskFull(UserError):
    pass


def some(items: Iterable[str], shown: int = 3) -> str:
    """The first `shown` of `items` (sorted), and how many more: keeps a one-line error one line."""
    items = sorted(items)
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more

"""Errors caused by the user's input. The entry scripts print them as one line and exit with 2."""


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

"""User-facing errors: each carries one line that says what is wrong and where."""


class BaseRewardError(Exception):
    """An error a user can fix; the CLI prints its message on one line, without a traceback."""


class ConfigError(BaseRewardError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(BaseRewardError):
    """An input record is invalid; the message starts with `file:line:`."""


class TrainingError(BaseRewardError):
    """Training cannot go on (e.g. the loss became NaN); nothing non-finite is saved."""

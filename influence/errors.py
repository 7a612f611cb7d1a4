"""Errors the user can act on. The CLI prints their message as one line and exits non-zero."""


class InfluenceError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(InfluenceError):
    """A configuration value or CLI argument is invalid."""


class DataError(InfluenceError):
    """A data set is missing, unreadable or does not fit the configuration."""


class StoreError(InfluenceError):
    """The run store is unreadable, unwritable, or holds a damaged file."""


class TraceError(InfluenceError):
    """A run has no trace, or the trace does not match its run."""


class DivergenceError(InfluenceError):
    """A loss, parameter or influence value became NaN or infinite."""


class Cancelled(InfluenceError):
    """The user cancelled a running job."""

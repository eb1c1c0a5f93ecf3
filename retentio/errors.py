"""Exception hierarchy shared by every layer (a leaf module: it imports nothing of the project)."""

from __future__ import annotations


class RetentioError(Exception):
    """Root of every error retentio raises on purpose; the CLI turns it into a clear message."""

    exit_code = 1


class ConfigError(RetentioError):
    """A configuration file or value is wrong (file, key and expected type in the message)."""

    exit_code = 2


class ContractError(RetentioError):
    """Input data break the data contract (table, column, row count and example in the message)."""

    exit_code = 2


class InsufficientDataError(RetentioError):
    """Too few customers, purchases or history for what was asked (minimum in the message)."""

    exit_code = 2


class DataSourceError(RetentioError):
    """A data source cannot be reached or read: connection, authentication or permission
    (host, database and table in the message, never a password)."""

    exit_code = 5


class ModelNotFoundError(RetentioError):
    """A registered model, version or alias does not exist (the fix is in the message)."""

    exit_code = 3


class CustomerNotFoundError(RetentioError):
    """A customer id is unknown to the feature store."""

    exit_code = 4


class LockBusyError(RetentioError):
    """Another process holds a lock this one needs (e.g. a cycle already running); the message
    names the holder."""

    exit_code = 75  # EX_TEMPFAIL: a temporary condition, try again later


class RetrainFailedError(RetentioError):
    """The cycle decided to retrain and training or the promotion gate failed; the champions
    are unchanged and the decision is recorded."""

    exit_code = 6

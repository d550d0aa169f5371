"""Errors that name the file and the field at fault.

Every user-facing failure raises :class:`InputError` (or a subclass); the CLI turns it into a
one-paragraph message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SynthloopError(Exception):
    """Base class of synthloop's own errors."""


class InputError(SynthloopError, ValueError):
    """Bad user input: a file, a field of it, and what is wrong.

    >>> str(InputError("must be positive", file="cfg.yaml", field="scale.min"))
    'cfg.yaml: field scale.min: must be positive'
    """

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        parts = []
        if self.file:
            parts.append(self.file)
        if field:
            parts.append(f"field {field}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(InputError):
    """A configuration file or override is invalid."""


class StorageError(SynthloopError):
    """A file could not be written: the disk is full, the file-size limit was reached, or a quota.
    ``path`` names the file; an atomic write leaves the previous file (or none), so rerunning with
    ``--resume`` once there is room continues the run."""

    def __init__(self, message: str, path: str | Path | None = None, errno: int | None = None):
        self.path = str(path) if path is not None else None
        self.errno = errno
        super().__init__(message)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.args[0], self.path, self.errno))


class DataUnavailableError(SynthloopError):
    """A built-in data set is not cached and cannot be fetched."""

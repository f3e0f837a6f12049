"""The errors grubench reports to a person: each message is one line, printed without a
traceback by the command that catches it (exit status 2)."""

from __future__ import annotations


class GrubenchError(Exception):
    """Base of the one-line errors below."""


class ConfigError(GrubenchError, ValueError):
    """A configuration value outside what is allowed: names the key, the value and what is."""


class DataError(GrubenchError, ValueError):
    """Data that failed a check on load (shape, range, split size, overlap)."""


class CheckpointError(GrubenchError, RuntimeError):
    """A checkpoint that cannot be used: unreadable, or written by another configuration."""


class RunDirError(GrubenchError, RuntimeError):
    """A run directory that cannot take this run: another config's, or in use by a process."""


class TrackingError(GrubenchError, RuntimeError):
    """The tracker cannot start (missing package, no API key for online mode)."""


class ReportError(GrubenchError):
    """Bad input to grubench-report (a directory, key, metric or paper that is not there)."""


class RegistryError(GrubenchError, ValueError):
    """A cell or task registered twice, or a plugin that fails to load."""

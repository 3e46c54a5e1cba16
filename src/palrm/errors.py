"""The exceptions palrm raises. Every message says what was received, what was expected and how to fix it."""

from __future__ import annotations


class PalrmError(Exception):
    """Base class of every error palrm raises on purpose (the CLI turns these into one clear line)."""


class DataFormatError(PalrmError, ValueError):
    """Input data (a pair table, an embedding file, a dataset source) is malformed."""


class ConfigError(PalrmError, ValueError):
    """A configuration is invalid; the message lists every problem found, not just the first."""


class UnknownUserError(PalrmError, KeyError):
    """A user id the model has no weights for; onboard the user with `adapt` or pass explicit weights."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ModelFileError(PalrmError, OSError):
    """A saved model directory is missing files or holds files palrm did not write."""

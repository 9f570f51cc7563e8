"""Exceptions that secateurs raises on purpose.

`UsageError` and its subclasses mean *the input was wrong*: the CLI prints the message on one line
and exits with code 2. Every message names what was found and what is accepted. Anything else that
escapes is an internal failure (exit code 1).
"""

from __future__ import annotations


class SecateursError(Exception):
    """Base class of every error secateurs raises deliberately."""


class UsageError(SecateursError):
    """Bad usage or bad input: an unknown name, an out-of-range value, a malformed file."""


class DataError(UsageError):
    """A dataset file is missing, truncated or malformed."""


class ConfigError(UsageError):
    """A recipe, suite or option set does not validate."""


class RunDirError(UsageError):
    """A run directory is missing, incomplete, locked, or does not match the model."""


class StructureError(UsageError):
    """A model cannot be traced, grouped or pruned as requested (names the layer)."""


class TrainingDiverged(SecateursError):
    """The loss or the weights became NaN/Inf; the message names the step."""

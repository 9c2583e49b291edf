"""The one base class of every error l2l raises for a user's input or environment.

``L2LError`` subclasses keep their builtin second base (``ValueError``, ``RuntimeError``) so
that callers catching those keep working.  The CLI catches ``L2LError`` in one place, prints
``Error: <message>`` (one line) and exits with status 1; anything else is a bug and keeps its
traceback.  The message of every subclass is one line that names the file (or option) and the
reason.
"""
from __future__ import annotations


class L2LError(Exception):
    """Base class: a user's mistake or a bad input, reported as one line."""

    exit_code = 1

    def line(self) -> str:
        return " ".join(str(self).split())


class ConfigError(L2LError, ValueError):
    """A bad option or configuration value (a stage's, a model's, a trainer's); the message
    names the option and the reason."""


class UnknownName(L2LError, KeyError):
    """A name no registry knows (a data set, a stage); the message lists the known ones."""

    def __str__(self) -> str:             # KeyError's own quotes the message
        return str(self.args[0]) if self.args else ""

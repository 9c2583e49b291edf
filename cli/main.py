"""The ``l2l`` command line: a click group; each module listed below adds its commands.

Commands are thin: they parse options, call one function of ``pipeline``/``training``/
``evaluation``, and print.  Errors: every l2l error subclasses ``L2LError``; ``L2LGroup`` turns
it into one line and exit status 1, for every command.  Heavy imports (torch) happen inside the commands, so ``l2l --help``
stays quick.
"""
from __future__ import annotations

import importlib
import shlex
import sys

import click

from ..core.errors import L2LError

# Printed before the traceback of an unexpected exception (the README's "Exit codes").
REPORT_LINE = ("l2l hit a bug, not a problem with your input (its traceback follows); please "
               "report it with the command line: {command}")

# Each module defines ``commands``: a list of click commands (or groups) to add to ``l2l``.
COMMAND_MODULES = [
    "l2l.cli.extract",
    "l2l.cli.store_cmds",
    "l2l.cli.synthetic",
    "l2l.cli.train_student",
    "l2l.cli.skim",
    "l2l.cli.demo",
]


class L2LGroup(click.Group):
    """The one place where a user's mistake becomes one line.

    Any ``L2LError`` raised by a command (or a nested group's command) is turned into
    ``Error: <one line>`` and exit status 1; click's own usage errors exit 2; anything else is a
    bug: ``REPORT_LINE`` (please report it), then its traceback, exit status 1.  Commands
    therefore do not catch l2l errors themselves.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L2LError as e:
            raise click.ClickException(e.line()) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except Exception:                  # a bug: what to do about it, then its traceback
            click.echo(REPORT_LINE.format(command=shlex.join(["l2l", *sys.argv[1:]])), err=True)
            raise


@click.group(cls=L2LGroup,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="l2l")
def main() -> None:
    """Listen to Look: extract audio-visual features into a store, train on them, evaluate.

    Exit status: 0 done; 1 an error in the input or the environment, printed as one line
    (`Error: ...`); 2 a usage error (an unknown option, a bad value).  `l2l extract` exits 0 when
    some videos failed: they are recorded in the store (`l2l store info STORE --failures`)."""


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).commands:
        main.add_command(_cmd)

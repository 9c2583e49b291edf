"""The ``l2l`` command line: a click group; each module listed below adds its commands.

Commands are thin: they parse options, call one function of ``pipeline``/``training``/
``evaluation``, and print.  Heavy imports (torch) happen inside the commands, so ``l2l --help``
stays quick.
"""
from __future__ import annotations

import importlib

import click

# Each module defines ``commands``: a list of click commands (or groups) to add to ``l2l``.
COMMAND_MODULES = [
    "l2l.cli.extract",
    "l2l.cli.store_cmds",
    "l2l.cli.synthetic",
    "l2l.cli.train_student",
    "l2l.cli.skim",
    "l2l.cli.demo",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="l2l")
def main() -> None:
    """Listen to Look: extract audio-visual features into a store, train on them, evaluate."""


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(_name).commands:
        main.add_command(_cmd)

"""``l2l demo``: the whole method end to end on a generated data set, as a user would run it."""
from __future__ import annotations

from pathlib import Path

import click

from .common import DEVICE


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("l2l-demo"),
              help="Folder for the data, the store, the checkpoints and the report.")
@DEVICE
@click.option("--seed", type=int, default=0, help="Seed of the synthetic set and the training.")
def demo(out, device, seed):
    """Make a small synthetic set, then run extract, train-student (classify), extract --student,
    train-skim, visualize and evaluate on it, printing each command; ends with the report's path."""
    from ..pipeline.demo import DemoConfig, run_demo

    report = run_demo(out, DemoConfig(device=device, seed=seed), run=run_in_process, echo=click.echo)
    click.echo(f"report: {report}")


def run_in_process(argv) -> None:
    """Run one ``l2l`` command line in this process; raises (instead of exiting) on an error."""
    from .main import main
    main.main(list(argv), prog_name="l2l", standalone_mode=False)


commands = [demo]

"""``l2l extract``: run extraction stages over a data set into a feature store."""
from __future__ import annotations

from pathlib import Path

import click

from ..stages import STAGES
from ..store import BACKENDS
from .common import (DATASET, DATASET_OPTION, DEVICE, PROGRESS, fail, load_dataset, parse_options,
                     parse_sets, store_option)


@click.command()
@DATASET
@DATASET_OPTION
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder holding the media files.")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="The data set's annotation file (e.g. ActivityNet's v1.3 JSON); "
                   "--dataset folder reads none.")
@store_option(exists=False, help="Feature store to create or extend (a folder for zarr, *.h5 for hdf5).")
@click.option("--subset", default=None, help="Only this subset (training, validation, testing); default: all.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N videos; default: all.")
@click.option("--stages", default="decode,spectrogram",
              help=f"Comma-separated stages, in order (known: {', '.join(STAGES)}).")
@click.option("--student", type=click.Path(exists=True, path_type=Path), default=None,
              help="Student checkpoint (file or train-student dir): adds the features stage.")
@click.option("--teacher-weights", default=None,
              help="'kinetics' (torchvision's cache) or a local checkpoint: adds the teacher stage.")
@click.option("--set", "sets", multiple=True, metavar="STAGE.OPTION=VALUE",
              help="Override a stage option, e.g. --set spectrogram.floor=1e-5 (repeatable).")
@DEVICE
@click.option("--workers", type=click.IntRange(1), default=1, help="Parallel worker processes (an embedded dask cluster when > 1; a GPU "
              "run that only reads stored inputs runs in one process, on every core).")
@click.option("--scheduler", default=None, help="Address of a running dask scheduler to use instead.")
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="Store backend for a new store (default: hdf5 for *.h5, else zarr).")
@click.option("--retry-failed", is_flag=True,
              help="Also retry videos whose decode failed before (same file, same settings).")
@PROGRESS
def extract(dataset_name, dataset_options, videos, annotations, store_path, subset, limit, stages, student,
            teacher_weights, sets, device, workers, scheduler, backend, retry_failed, progress):
    """Decode videos, compute spectrograms (and teacher / student features) into STORE.

    Resumable: videos already complete with the same stage configs are skipped; failures are
    recorded in the store (`l2l store info STORE --failures`) and the run goes on; the exit
    status is 0 even when some videos failed (bad input stops the run before anything is
    written, with exit status 1)."""
    from ..pipeline.extract import extract as run_extract, plan_stages

    if not videos.is_dir():                      # before anything is read or written
        fail(f"{videos}: no such videos folder (--videos)")
    names = [s.strip() for s in stages.split(",") if s.strip()]
    options = parse_sets(sets)
    if teacher_weights is not None:
        names += [] if "teacher" in names else ["teacher"]
        options.setdefault("teacher", {})["weights"] = str(teacher_weights)
    if student is not None:
        names += [] if "features" in names else ["features"]
        options.setdefault("features", {})["checkpoint"] = str(student)
    dataset = load_dataset(dataset_name, videos, annotations, parse_options(dataset_options))
    plan = plan_stages(names, options)
    summary = run_extract(dataset, store_path, stages=plan, subset=subset, limit=limit,
                          device=device, workers=workers, scheduler=scheduler,
                          backend=backend, progress=progress, retry_failed=retry_failed,
                          missing_reason=f"listed in {annotations or videos} but not found in {videos}")
    for note in summary.notes:
        click.echo(note, err=True)
    for f in summary.failures[:20]:
        click.echo(f"failed [{f.stage}] {f.reason}", err=True)
    if len(summary.failures) > 20:
        click.echo(f"... and {len(summary.failures) - 20} more (l2l store info {store_path} --failures)",
                   err=True)
    click.echo(summary.line())


commands = [extract]

"""``l2l train-skim``, ``l2l evaluate`` and ``l2l visualize``: IMGAUD-SKIMMING on a store."""
from __future__ import annotations

from pathlib import Path

import click

from ..datasets.base import ADAPTER_MODULES
from .common import DATASET_OPTION, DEVICE, PROGRESS, fail, store_option

STORE = store_option("--features", help="Feature store with the student's per-moment features "
                                        "(--features is the older spelling).")
MEMORY_BUDGET = click.option(
    "--memory-budget", "memory_budget", type=click.FloatRange(min=0, min_open=True), default=None,
    metavar="GB", help="Gigabytes (GiB) the features may take in memory: a subset that would not "
    "fit is streamed from the store batch by batch (same results).  Default: a quarter of this "
    "machine's RAM.")
CHECKPOINT = click.option("--checkpoint", type=click.Path(exists=True, path_type=Path),
                          required=True, help="A train-skim --out folder, or its checkpoint.pt.")


@click.command("train-skim")
@STORE
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: checkpoint.pt, log.csv, config.json.")
@click.option("--student", type=click.Path(exists=True, path_type=Path), default=None,
              help="train-student checkpoint (file or folder), or the authors' "
                   "ImageAudioNet_ActivityNet.pth (on a store imported from their release), giving "
                   "Psi (frozen) and the classifier; without it both start fresh and train.")
@click.option("--steps", type=int, default=10, help="T, the moments looked at per video.")
@click.option("--indexing", type=click.Choice(["audiovisual", "visual", "single"]),
              default="audiovisual",
              help="audiovisual: a query per modality; visual: query images, take audio at the "
                   "image pick; single: one bank, one query, no Psi.")
@click.option("--bank", "banks", multiple=True,
              help="Store arrays to index (default: image + audio; single: imageaudio).")
@click.option("--recognition-features", default="",
              help="Also train a per-moment classifier on this array (e.g. teacher) and "
                   "recognise the picked moments with it.")
@click.option("--readout", type=click.Choice(["inputs", "outputs"]), default="inputs",
              show_default=True,
              help="What the classifier averages: inputs x_0..x_{T-1} (the paper's figure and "
                   "the authors' main model) or outputs x_1..x_T (their single-modality code).")
@click.option("--fresh-classifier/--student-classifier", default=False, show_default=True,
              help="A new classifier at the full lr (the authors' single-modality variant) "
                   "instead of the student's at --classifier-lr-factor x lr.")
@click.option("--epochs", type=int, default=25, show_default=True,
              help="Epochs (the paper: 25).  Left at its default, more are run when needed to "
                   "reach --min-steps; typed, exactly these (unless --min-steps is typed too).")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Videos per batch at most (the paper: 256); capped at a quarter of the "
                   "training set so small sets still take several steps an epoch.")
@click.option("--min-steps", type=int, default=500, show_default=True,
              help="Optimizer steps at least: small sets train more epochs (ActivityNet's "
                   "25 x 40 = 1000 steps keep the paper's recipe); 0 = --epochs exactly.")
@click.option("--lr", type=float, default=0.01, show_default=True, help="Learning rate.")
@click.option("--milestones", type=(int, int), default=(15, 20), show_default=True,
              help="The lr drops 10x at epochs A and B of a 25-epoch schedule (the paper: 15 "
                   "20), scaled to the epochs run (x epochs / 25).")
@click.option("--classifier-lr-factor", type=float, default=0.1, show_default=True,
              help="The student's classifier learns at this x lr.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True,
              help="SGD weight decay.")
@click.option("--crop", type=(int, int), default=(200, 500), show_default=True,
              help="Random contiguous window of MIN MAX moments per training video.")
@click.option("--train-subset", default="training", show_default=True,
              help="Subset to train on.")
@click.option("--val-subset", default="validation", show_default=True,
              help="Subset scored after every epoch (log.csv).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initialisation, shuffling and crops.")
@MEMORY_BUDGET
@DEVICE
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue the run already in --out (same options needed).")
@PROGRESS
def train_skim(store_path, out_dir, student, steps, indexing, banks, recognition_features,
               readout, fresh_classifier, epochs, batch_size, min_steps, lr, milestones,
               classifier_lr_factor, weight_decay, crop, train_subset, val_subset, seed,
               memory_budget, device, resume, progress):
    """Train the skimming network on STORE's cached image/audio features."""
    from ..training.skim import TrainConfig, train_skim as run
    if crop[0] < 1 or crop[1] < crop[0]:
        fail(f"--crop {crop[0]} {crop[1]}: need 1 <= MIN <= MAX")
    ctx = click.get_current_context()
    typed = {p: ctx.get_parameter_source(p) not in (click.core.ParameterSource.DEFAULT,
                                                    click.core.ParameterSource.DEFAULT_MAP)
             for p in ("epochs", "min_steps")}
    if typed["epochs"] and not typed["min_steps"]:
        min_steps = 0                  # --epochs as typed: the step floor is for the default
    config = TrainConfig(steps=steps, indexing=indexing, features=tuple(banks),
                         epochs=epochs, batch_size=batch_size, min_steps=min_steps, lr=lr,
                         milestones=tuple(milestones),
                         classifier_lr_factor=classifier_lr_factor,
                         fresh_classifier=fresh_classifier, readout=readout,
                         weight_decay=weight_decay, crop_min=crop[0], crop_max=crop[1],
                         train_subset=train_subset, val_subset=val_subset,
                         recognition_features=recognition_features, seed=seed)
    row = run(store_path, out_dir, student=student, config=config, device=device,
              resume=resume, progress=progress, warn=lambda m: click.echo(m, err=True),
              memory_budget_gb=memory_budget)
    summary = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items())
    click.echo(f"trained: {out_dir / 'checkpoint.pt'}  "
               + (summary or "(already trained for every epoch asked; nothing to do)"))


@click.command("evaluate")
@STORE
@CHECKPOINT
@click.option("--subset", default="validation", help="Videos to evaluate on.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for metrics.json, predictions/, plots and report.md.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the RANDOM baseline.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Videos per forward pass.")
@click.option("--dataset", "dataset_name", type=click.Choice(sorted(ADAPTER_MODULES)), default=None,
              help="With --annotations: the data set's adapter, so that listed videos that "
                   "failed or were never extracted count as misses (the \"all listed\" row).")
@click.option("--annotations", type=click.Path(exists=True, path_type=Path), default=None,
              help="The annotation file (or folder) given to extract, read with --dataset.")
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The videos folder given to extract (some adapters list only the videos "
                   "they find there).")
@DATASET_OPTION
@MEMORY_BUDGET
@DEVICE
@PROGRESS
def evaluate(store_path, checkpoint, subset, out_dir, seed, batch_size, dataset_name,
             annotations, videos, dataset_options, memory_budget, device, progress):
    """Skimming vs UNIFORM, RANDOM, DENSE and SALIENCY: accuracy, GFLOPs, trade-off plots."""
    from ..evaluation.cost import UNIT_NOTE
    from ..evaluation.report import evaluate as run
    listed = None
    from ..datasets.base import NO_ANNOTATIONS
    if (dataset_name is None and annotations is not None) or (
            dataset_name is not None and annotations is None and dataset_name not in NO_ANNOTATIONS):
        fail("--dataset and --annotations go together (the list of every video of the subset)")
    if dataset_name is not None:
        from .common import load_dataset, parse_options
        ds = load_dataset(dataset_name, videos or Path("."), annotations,
                          parse_options(dataset_options))
        listed = {v.id: list(v.labels) for v in ds.subset(subset).videos}
    m = run(store_path, checkpoint, out_dir, subset=subset, seed=seed,
            batch_size=batch_size, device=device, listed=listed, progress=progress,
            memory_budget_gb=memory_budget)
    click.echo(f"{m['dataset']} / {m['subset']}: {m['num_videos']} extracted videos of "
               f"{m['num_listed']} listed ({m['listed_from']}); {UNIT_NOTE}")
    click.echo(f"{'method':10s} {'steps':>5s} {'mAP':>7s} {'top1':>7s} {'mAP all':>8s} "
               f"{'GFLOPs':>9s}")
    for name, r in m["methods"].items():
        click.echo(f"{name:10s} {r['steps']:5d} {r['mAP']:7.2f} {r['top1']:7.2f} "
                   f"{m['all_listed'][name]['mAP']:8.2f} {r['gflops_per_video']:9.3f}")
    for name, r in m["variants"].items():
        click.echo(f"{'skim ' + name[:5]:10s} {r['steps']:5d} {r['mAP']:7.2f} {r['top1']:7.2f} "
                   f"{'':8s} {r['gflops_per_video']:9.3f}")
    click.echo(f"report: {out_dir / 'report.md'}")


@click.command("visualize")
@STORE
@CHECKPOINT
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the video files (needed when the store keeps no frames).")
@click.option("--id", "video_id", required=True, help="Video id in the store.")
@click.option("--png", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file to write (required).")
@click.option("--out", "old_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              hidden=True, help="Older spelling of --png (elsewhere --out is a folder).")
@click.option("--steps", type=int, default=None, help="Stop after k steps (default: T).")
def visualize(store_path, checkpoint, videos, video_id, out_file, old_out, steps):
    """The moments the skim model picks above T uniform moments of one video, as a PNG."""
    if (out_file is None) == (old_out is None):
        raise click.UsageError("give the PNG to write: --png FILE")
    out_file = out_file or old_out
    from ..evaluation.visualize import visualize as run
    from ..models.skim import load_skim
    from ..store import open_store
    model, _ = load_skim(checkpoint)
    path = run(open_store(store_path), model, video_id, out_file, videos=videos, steps=steps)
    click.echo(f"wrote {path}")


commands = [train_skim, evaluate, visualize]

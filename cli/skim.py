"""``l2l train-skim``, ``l2l evaluate`` and ``l2l visualize``: IMGAUD-SKIMMING on a store."""
from __future__ import annotations

from pathlib import Path

import click

from .common import DEVICE, fail

STORE = click.option("--features", "features", type=click.Path(exists=True, path_type=Path),
                     required=True, help="Feature store with the student's per-moment features.")
CHECKPOINT = click.option("--checkpoint", type=click.Path(exists=True, path_type=Path),
                          required=True, help="A train-skim --out folder, or its checkpoint.pt.")


@click.command("train-skim")
@STORE
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: checkpoint.pt, log.csv, config.json.")
@click.option("--student", type=click.Path(exists=True, path_type=Path), default=None,
              help="train-student checkpoint (file or folder) giving Psi (frozen) and the "
                   "classifier; without it both start fresh and train.")
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
@click.option("--epochs", type=int, default=25)
@click.option("--batch-size", type=int, default=256)
@click.option("--lr", type=float, default=0.01)
@click.option("--classifier-lr-factor", type=float, default=0.1,
              help="The student's classifier learns at this x lr.")
@click.option("--weight-decay", type=float, default=1e-4)
@click.option("--crop", type=(int, int), default=(200, 500),
              help="Random contiguous window of MIN MAX moments per training video.")
@click.option("--train-subset", default="training")
@click.option("--val-subset", default="validation")
@click.option("--seed", type=int, default=0)
@DEVICE
@click.option("--resume/--no-resume", default=True,
              help="Continue the run already in --out (same options needed).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train_skim(features, out_dir, student, steps, indexing, banks, recognition_features, epochs,
               batch_size, lr, classifier_lr_factor, weight_decay, crop, train_subset,
               val_subset, seed, device, resume, progress):
    """Train the skimming network on STORE's cached image/audio features."""
    from ..training.skim import SkimError, TrainConfig, train_skim as run
    if crop[0] < 1 or crop[1] < crop[0]:
        fail(f"--crop {crop[0]} {crop[1]}: need 1 <= MIN <= MAX")
    try:
        config = TrainConfig(steps=steps, indexing=indexing, features=tuple(banks),
                             epochs=epochs, batch_size=batch_size, lr=lr,
                             classifier_lr_factor=classifier_lr_factor,
                             weight_decay=weight_decay, crop_min=crop[0], crop_max=crop[1],
                             train_subset=train_subset, val_subset=val_subset,
                             recognition_features=recognition_features, seed=seed)
        row = run(features, out_dir, student=student, config=config, device=device,
                  resume=resume, progress=progress)
    except (SkimError, ValueError) as e:
        fail(str(e))
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
@click.option("--seed", type=int, default=0, help="Seed of the RANDOM baseline.")
@click.option("--batch-size", type=int, default=256)
@DEVICE
def evaluate(features, checkpoint, subset, out_dir, seed, batch_size, device):
    """Skimming vs UNIFORM, RANDOM, DENSE and SALIENCY: accuracy, GFLOPs, trade-off plots."""
    from ..evaluation.report import evaluate as run
    from ..training.skim import SkimError
    try:
        m = run(features, checkpoint, out_dir, subset=subset, seed=seed, batch_size=batch_size,
                device=device)
    except (SkimError, ValueError) as e:
        fail(str(e))
    click.echo(f"{m['dataset']} / {m['subset']}: {m['num_videos']} videos")
    click.echo(f"{'method':10s} {'steps':>5s} {'mAP':>7s} {'top1':>7s} {'GFLOPs':>9s}")
    for name, r in m["methods"].items():
        click.echo(f"{name:10s} {r['steps']:5d} {r['mAP']:7.2f} {r['top1']:7.2f} "
                   f"{r['gflops_per_video']:9.3f}")
    click.echo(f"report: {out_dir / 'report.md'}")


@click.command("visualize")
@STORE
@CHECKPOINT
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the video files (needed when the store keeps no frames).")
@click.option("--id", "video_id", required=True, help="Video id in the store.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG to write.")
@click.option("--steps", type=int, default=None, help="Stop after k steps (default: T).")
def visualize(features, checkpoint, videos, video_id, out_file, steps):
    """The moments the skim model picks above T uniform moments of one video, as a PNG."""
    from ..evaluation.visualize import visualize as run
    from ..store import StoreError, open_store
    from ..training.skim import SkimError, load_skim
    try:
        model, _ = load_skim(checkpoint)
        path = run(open_store(features), model, video_id, out_file, videos=videos, steps=steps)
    except (SkimError, StoreError, ValueError) as e:
        fail(str(e))
    click.echo(f"wrote {path}")


commands = [train_skim, evaluate, visualize]

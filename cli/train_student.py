"""``l2l train-student``: train the IMGAUD2VID student on a feature store's cached inputs."""
from __future__ import annotations

from pathlib import Path

import click

from .common import DEVICE, fail


@click.command("train-student")
@click.option("--store", "store_path", type=click.Path(exists=True, path_type=Path), required=True,
              help="Feature store with frames and logmel (and teacher arrays to distill).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: checkpoints, student.pt, metrics.csv; resumed if it has a run.")
@click.option("--objective", type=click.Choice(["distill", "classify", "both"]), default="distill",
              help="distill: L1 + lambda KL to the teacher; classify: cross-entropy with the "
                   "video's label; both: the two together.")
@click.option("--teacher-weights", "--teacher", "teacher_weights", default=None,
              help="Check the store's teacher arrays were made with these weights "
                   "('kinetics' or a checkpoint path).")
@click.option("--epochs", type=int, default=60)
@click.option("--batch-size", type=int, default=16)
@click.option("--lr", type=float, default=1e-3)
@click.option("--momentum", type=float, default=0.9)
@click.option("--nesterov/--no-nesterov", default=True)
@click.option("--weight-decay", type=float, default=1e-4)
@click.option("--milestones", default=None,
              help="Comma-separated epochs where lr /= 10 (default: 30,50 scaled to --epochs).")
@click.option("--gamma", type=float, default=0.1, help="lr factor at each milestone.")
@click.option("--kl-weight", type=float, default=1.0, help="lambda, the weight of the KL term.")
@click.option("--temperature", type=float, default=1.0, help="Softmax temperature of the KL term.")
@click.option("--subset", default="training", help="Train on this subset ('all' for every video).")
@click.option("--max-moments", type=int, default=None,
              help="Moments drawn per epoch (default: all); small values make quick demos.")
@click.option("--image-weights", default=None,
              help="Start the image trunk from 'imagenet' (torchvision's cache) or a resnet18 file.")
@click.option("--seed", type=int, default=0)
@DEVICE
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train_student(store_path, out_dir, objective, teacher_weights, epochs, batch_size, lr, momentum,
                  nesterov, weight_decay, milestones, gamma, kl_weight, temperature, subset,
                  max_moments, image_weights, seed, device, progress):
    """Train the image and audio trunks, Psi and the classifier from STORE's cached moments."""
    from ..models.students import WeightsError
    from ..store import StoreError
    from ..training.student import TrainConfig, TrainError, train_student as run

    try:
        ms = None if milestones is None else tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        fail(f"--milestones {milestones!r}: expected comma-separated epochs, e.g. 30,50")
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        config = TrainConfig(objective=objective, epochs=epochs, batch_size=batch_size, lr=lr,
                             momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                             milestones=ms, gamma=gamma, kl_weight=kl_weight,
                             temperature=temperature, subset=None if subset == "all" else subset,
                             max_moments=max_moments, seed=seed, image_weights=image_weights,
                             teacher_weights=teacher_weights)
        result = run(store_path, out_dir, config, device=device, progress=progress,
                     log=click.echo)
    except (TrainError, StoreError, WeightsError) as e:
        fail(str(e))
    click.echo(f"student {result['path']} (hash {result['hash']}, {result['epochs']} epochs)")


commands = [train_student]

"""``l2l train-student``: train the IMGAUD2VID student on a feature store's cached inputs, or
fine-tune a distilled one on the store's classes (``--init``)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import DEVICE, PROGRESS, fail, store_option, torch_device

WEIGHTS_HELP = ("imagenet (torchvision's ResNet-18, from the torch hub cache), random, or a "
                "resnet18 state-dict file.")


@click.command("train-student")
@store_option(help="Feature store with frames and logmel (and teacher arrays to distill).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: checkpoints, student.pt, metrics.csv; resumed if it has a run.")
@click.option("--objective", type=click.Choice(["distill", "classify", "both"]), default="distill",
              help="distill: L1 + lambda KL to the teacher; classify: cross-entropy with the "
                   "video's label (fine-tuning); both: the two together.")
@click.option("--init", "init", type=click.Path(exists=True, path_type=Path), default=None,
              help="Start from this student (a train-student folder or file), e.g. the distilled "
                   "one, to fine-tune it on the store's classes: its classifier is replaced when "
                   "its classes differ.  The trunk-weight options are then ignored.")
@click.option("--image-weights", default="imagenet",
              help="Image trunk initialisation: " + WEIGHTS_HELP)
@click.option("--audio-weights", default="imagenet",
              help="Audio trunk initialisation (all but its 1-channel conv1): " + WEIGHTS_HELP)
@click.option("--audio-pool", type=click.Choice(["max", "avg"]), default="max", show_default=True,
              help="Audio trunk pooling over time: max (the authors' code, which made their "
                   "released features and checkpoint) or avg (the paper's text).")
@click.option("--teacher-weights", "--teacher", "teacher_weights", default=None,
              help="Check the store's teacher arrays were made with these weights "
                   "('kinetics' or a checkpoint path).")
@click.option("--epochs", type=int, default=60, help="Epochs (the paper: 60).")
@click.option("--batch-size", type=int, default=16, help="Moments per batch (the paper: 16).")
@click.option("--lr", type=float, default=1e-3, help="Learning rate (the paper: 1e-3).")
@click.option("--momentum", type=float, default=0.9, help="SGD momentum.")
@click.option("--nesterov/--no-nesterov", default=True, help="Nesterov momentum.")
@click.option("--weight-decay", type=float, default=1e-4, help="SGD weight decay.")
@click.option("--milestones", default=None,
              help="Comma-separated epochs where lr /= 10 (default: 30,50 scaled to --epochs).")
@click.option("--gamma", type=float, default=0.1, help="lr factor at each milestone.")
@click.option("--kl-weight", type=float, default=1.0, help="lambda, the weight of the KL term.")
@click.option("--temperature", type=float, default=1.0, help="Softmax temperature of the KL term.")
@click.option("--subset", default="training", help="Train on this subset ('all' for every video).")
@click.option("--max-moments", type=int, default=None,
              help="Moments drawn per epoch at most (default: all); small values make quick demos.")
@click.option("--moments-per-video", type=int, default=None,
              help="K: an epoch draws K random moments of each video (seeded; all of a shorter "
                   "video) instead of every moment (default: every moment).")
@click.option("--seed", type=int, default=0, help="Seed of the initialisation and sampling.")
@DEVICE
@PROGRESS
def train_student(store_path, out_dir, objective, init, image_weights, audio_weights, audio_pool,
                  teacher_weights, epochs, batch_size, lr, momentum, nesterov, weight_decay,
                  milestones, gamma, kl_weight, temperature, subset, max_moments, moments_per_video,
                  seed, device,
                  progress):
    """Train the image and audio trunks, Psi and the classifier from STORE's cached moments."""
    from ..training.student import TrainConfig, train_student as run

    try:
        ms = None if milestones is None else tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError:
        fail(f"--milestones {milestones!r}: expected comma-separated epochs, e.g. 30,50")
    device = torch_device(device)
    config = TrainConfig(objective=objective, epochs=epochs, batch_size=batch_size, lr=lr,
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         milestones=ms, gamma=gamma, kl_weight=kl_weight,
                         temperature=temperature, subset=None if subset == "all" else subset,
                         max_moments=max_moments, moments_per_video=moments_per_video, seed=seed, image_weights=image_weights,
                         audio_weights=audio_weights, audio_pool=audio_pool,
                         init=None if init is None else str(init),
                         teacher_weights=teacher_weights)
    if moments_per_video is not None and moments_per_video < 1:
        fail(f"--moments-per-video {moments_per_video}: need at least 1")
    result = run(store_path, out_dir, config, device=device, progress=progress, log=click.echo)
    click.echo(f"student {result['path']} (hash {result['hash']}, {result['epochs']} epochs)")


commands = [train_student]

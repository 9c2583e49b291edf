"""``l2l make-synthetic OUT``: render the synthetic audio-visual set (see ``l2l.datasets.synthetic``).

Only option parsing and printing; the construction lives in ``datasets/synthetic.py``.
"""
from __future__ import annotations

import time

import click

from .common import PROGRESS


@click.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(1, 48), default=5, help="Number of classes.")
@click.option("--videos-per-class", type=click.IntRange(1), default=10, help="Videos per class.")
@click.option("--seed", type=int, default=0, help="Fixes every pixel and sample.")
@click.option("--duration-min", type=click.FloatRange(6), default=20.0, help="Shortest video, seconds.")
@click.option("--duration-max", type=click.FloatRange(6), default=40.0, help="Longest video, seconds.")
@click.option("--fps", type=click.IntRange(1), default=30, help="Video frame rate.")
@click.option("--width", type=click.IntRange(16), default=160, help="Frame width (even).")
@click.option("--height", type=click.IntRange(16), default=120, help="Frame height (even).")
@click.option("--audio-rate", type=click.Choice(["16000", "44100"]), default="16000", help="Audio sample rate, Hz.")
@click.option("--evidence-min", type=click.FloatRange(0.01, 0.5), default=0.10,
              help="Smallest fraction of a video holding its class's signatures.")
@click.option("--evidence-max", type=click.FloatRange(0.01, 0.5), default=0.20,
              help="Largest fraction of a video holding its class's signatures.")
@click.option("--val-fraction", type=click.FloatRange(0, 1), default=0.25, help="Share of each class in 'validation'.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Rendering processes [default: CPU count].")
@PROGRESS
def make_synthetic(out, classes, videos_per_class, seed, duration_min, duration_max, fps, width, height,
                   audio_rate, evidence_min, evidence_max, val_fraction, workers, progress):
    """Write OUT/videos/*.mp4 (H.264 + AAC) and OUT/annotations.json (ActivityNet v1.3 format)."""
    from tqdm import tqdm

    from ..datasets.synthetic import make_synthetic as make

    total = classes * videos_per_class
    t0 = time.perf_counter()
    with tqdm(total=total, desc="rendering", unit="video", disable=not progress, dynamic_ncols=True) as bar:
        def advance(done, _total, _seen=[0]):
            bar.update(done - _seen[0])
            _seen[0] = done
        s = make(out, classes=classes, videos_per_class=videos_per_class, seed=seed,
                 duration=(duration_min, duration_max), fps=fps, size=(width, height),
                 audio_rate=int(audio_rate), evidence=(evidence_min, evidence_max),
                 val_fraction=val_fraction, workers=workers, progress=advance)
    click.echo(f"{total} videos in {s.videos_dir}  ({time.perf_counter() - t0:.1f} s)")
    click.echo(f"annotations: {s.annotations}")
    click.echo(f"classes: {', '.join(s.classes)}")


commands = [make_synthetic]

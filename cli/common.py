"""Small helpers shared by the CLI modules (options, errors, data-set loading)."""
from __future__ import annotations

from pathlib import Path

import click

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      help="Where models run: the GPU when there is one (auto), or as given.")


def fail(message: str) -> None:
    """Print one clear line and exit with status 2."""
    raise click.ClickException(" ".join(str(message).split()))


def parse_sets(sets) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        stage, dot, option = key.partition(".")
        if not eq or not dot or not stage or not option:
            fail(f"--set {s!r}: expected STAGE.OPTION=VALUE, e.g. spectrogram.floor=1e-5")
        out.setdefault(stage, {})[option] = value
    return out


def load_dataset(name: str, videos: Path, annotations: Path):
    from ..datasets import ADAPTERS, AnnotationError
    if name not in ADAPTERS:
        fail(f"unknown data set {name!r} (known: {', '.join(sorted(ADAPTERS))})")
    if not Path(annotations).exists():
        fail(f"{annotations}: annotation file not found")
    try:
        return ADAPTERS[name](Path(videos), Path(annotations))
    except AnnotationError as e:
        fail(str(e))

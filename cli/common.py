"""Small helpers shared by the CLI modules (options, errors, data-set loading)."""
from __future__ import annotations

from pathlib import Path

import click

from ..datasets.base import ADAPTER_MODULES

DATASET = click.option("--dataset", "dataset_name", type=click.Choice(sorted(ADAPTER_MODULES)),
                       required=True, help="Data-set adapter.")
DATASET_OPTION = click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
                              help="An adapter option, e.g. split=2 (ucf101) or seed=1 (mini-sports1m).")

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      help="Where models run: the GPU when there is one (auto), or as given.")


def fail(message: str) -> None:
    """Print one clear line (``Error: ...``) and exit with status 1."""
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


def parse_options(pairs) -> dict[str, object]:
    """``KEY=VALUE`` pairs -> dict; values that look like numbers become numbers."""
    out: dict[str, object] = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            fail(f"--dataset-option {p!r}: expected KEY=VALUE, e.g. seed=1")
        for conv in (int, float):
            try:
                out[key.replace("-", "_")] = conv(value)
                break
            except ValueError:
                continue
        else:
            out[key.replace("-", "_")] = value
    return out


def load_dataset(name: str, videos: Path, annotations: Path, options: dict | None = None):
    from ..datasets import AnnotationError, get_adapter
    if not Path(annotations).exists():
        fail(f"{annotations}: annotation file not found")
    try:
        return get_adapter(name)(Path(videos), Path(annotations), **(options or {}))
    except AnnotationError as e:
        fail(str(e))
    except TypeError as e:                      # an option this adapter does not take
        fail(f"--dataset {name}: {e}")

"""Options and helpers shared by the CLI modules, so that one thing has one name everywhere.

- the store is ``--store`` in every command (old spellings stay as aliases: ``--features``;
  ``l2l store ...`` subcommands also take it positionally);
- ``--out`` is always a folder; an output that is one file has its own name (``--png``,
  ``OUTFILE``);
- ``--progress/--no-progress``: bars only when stderr is a terminal, unless forced;
- choices come from the registries (data-set adapters, devices).

This module does not catch errors: ``L2LError`` becomes one line in ``cli.main.L2LGroup``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..datasets.base import ADAPTER_MODULES

DATASET = click.option("--dataset", "dataset_name", type=click.Choice(sorted(ADAPTER_MODULES)),
                       required=True, help="Data-set adapter (the annotation format).")
DATASET_OPTION = click.option("--dataset-option", "dataset_options", multiple=True, metavar="KEY=VALUE",
                              help="An adapter option, e.g. split=2 (ucf101) or seed=1 (mini-sports1m).")

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      help="Where models run: the GPU when there is one (auto), or as given.")


def store_option(*aliases: str, exists: bool = True,
                 help: str = "Feature store: a folder (zarr) or a *.h5 file (hdf5)."):
    """``--store STORE`` (required), with older spellings as aliases: ``--features`` always
    (the README: the old spelling works in every command), and ``aliases``."""
    aliases = tuple(dict.fromkeys(("--features", *aliases)))
    return click.option("--store", *aliases, "store_path", required=True, help=help,
                        type=click.Path(exists=exists, path_type=Path))


def _resolve_progress(ctx, param, value):
    return sys.stderr.isatty() if value is None else value


PROGRESS = click.option("--progress/--no-progress", default=None, callback=_resolve_progress,
                        show_default=False,
                        help="Show progress bars (default: only when stderr is a terminal, so "
                             "that logs hold no redraws).")


def torch_device(device: str) -> str:
    """``--device``: "auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without one
    stops with one line."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device} asked for, but torch sees no CUDA device")
    return device


def fail(message: str) -> None:
    """Print one clear line (``Error: ...``) and exit with status 1 (for checks of CLI input)."""
    raise click.ClickException(" ".join(str(message).split()))


def parse_sets(sets) -> dict[str, dict[str, str]]:
    """``STAGE.OPTION=VALUE`` strings -> {stage: {option: value}}."""
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


def load_dataset(name: str, videos: Path, annotations: Path | None, options: dict | None = None):
    """The adapter's ``Dataset``; a missing file or an option the adapter lacks is one line.
    ``annotations`` may be None only for the adapters that read none (``--dataset folder``)."""
    from ..datasets import get_adapter
    from ..datasets.base import NO_ANNOTATIONS
    if annotations is None:
        if name not in NO_ANNOTATIONS:
            fail(f"--dataset {name} needs --annotations (only {', '.join(NO_ANNOTATIONS)} reads none)")
    elif not Path(annotations).exists():
        fail(f"{annotations}: annotation file not found")
    try:
        return get_adapter(name)(Path(videos), None if annotations is None else Path(annotations),
                                 **(options or {}))
    except TypeError as e:                      # an option this adapter does not take
        fail(f"--dataset {name}: {e}")

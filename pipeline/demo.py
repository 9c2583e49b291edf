"""The demo: the commands a user runs, in order, on a small synthetic data set.

``demo_commands`` returns them as argument lists (so the README, the tests and ``l2l demo`` show
exactly the same thing); ``run_demo`` hands them, one after another, to a ``run`` callable that
executes one ``l2l`` command line (``l2l demo`` passes the click group, in this process), printing
each as a shell line first.  This module does not import ``cli`` (it sits below it).  Its defaults are sized for a 2-core CPU machine with no GPU (under ten
minutes); ``scale`` makes the data set and the training larger.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Callable, Sequence

from ..core.errors import L2LError


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    classes: int = 5
    videos_per_class: int = 10
    duration: tuple[float, float] = (20.0, 30.0)
    seed: int = 0
    student_epochs: int = 2
    student_moments: int = 800        # moments drawn per student epoch
    student_batch: int = 32
    student_lr: float = 0.05
    skim_epochs: int = 15
    skim_batch: int = 16
    skim_lr: float = 0.01
    skim_min_steps: int | None = None  # train-skim --min-steps (None: its default)
    steps: int = 3                    # T: the demo compares skim and uniform at 3 moments
    device: str = "auto"


def demo_commands(out: Path, c: DemoConfig = DemoConfig()) -> list[list[str]]:
    out = Path(out)
    data, store = out / "data", out / "store"
    videos, ann = data / "videos", data / "annotations.json"
    student, skim, ev = out / "student", out / "skim", out / "eval"
    extract = ["extract", "--dataset", "synthetic", "--videos", str(videos), "--annotations", str(ann),
               "--store", str(store), "--device", c.device]
    return [
        ["make-synthetic", str(data), "--classes", str(c.classes), "--videos-per-class",
         str(c.videos_per_class), "--duration-min", str(c.duration[0]), "--duration-max",
         str(c.duration[1]), "--seed", str(c.seed)],
        extract,
        ["train-student", "--store", str(store), "--out", str(student), "--objective", "classify",
         "--epochs", str(c.student_epochs), "--max-moments", str(c.student_moments),
         "--batch-size", str(c.student_batch), "--lr", str(c.student_lr),
         "--milestones", str(c.student_epochs), "--device", c.device, "--seed", str(c.seed),
         "--image-weights", "random", "--audio-weights", "random"],
        extract + ["--student", str(student)],
        ["train-skim", "--store", str(store), "--out", str(skim), "--student", str(student),
         "--steps", str(c.steps), "--epochs", str(c.skim_epochs), "--batch-size", str(c.skim_batch),
         "--lr", str(c.skim_lr), "--device", c.device]
        + ([] if c.skim_min_steps is None else ["--min-steps", str(c.skim_min_steps)]),
        ["visualize", "--store", str(store), "--checkpoint", str(skim), "--videos", str(videos),
         "--id", "{first_validation_video}", "--png", str(out / "picks.png")],
        ["evaluate", "--store", str(store), "--checkpoint", str(skim), "--subset", "validation",
         "--out", str(ev)],
    ]


def run_demo(out: Path, c: DemoConfig = DemoConfig(), *, run: Callable[[Sequence[str]], object],
             echo: Callable[[str], None] = print) -> Path:
    """Run every demo command with ``run(argv)`` (argv without the leading ``l2l``); returns the
    path of ``report.md``.  ``run`` must raise when a command fails."""
    out = Path(out)
    t_all = time.perf_counter()
    for argv in demo_commands(out, c):
        if "{first_validation_video}" in argv:
            argv = [a.replace("{first_validation_video}", _first_validation(out / "store")) for a in argv]
        echo("$ l2l " + " ".join(shlex.quote(a) for a in argv))
        t0 = time.perf_counter()
        run(argv)
        echo(f"  ({time.perf_counter() - t0:.0f} s)")
    report = out / "eval" / "report.md"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    m = metrics["methods"]
    echo(f"skim {m['skim']['top1']:.1f}% vs uniform {m['uniform']['top1']:.1f}% top-1 at "
         f"{m['skim']['steps']} moments; demo took {time.perf_counter() - t_all:.0f} s")
    return report


def _first_validation(store_path: Path) -> str:
    from ..store import open_store
    ids = open_store(store_path).ids("validation")
    if not ids:
        raise L2LError(f"{store_path}: no validation videos to visualise")
    return ids[0]

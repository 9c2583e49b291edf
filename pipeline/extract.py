"""Extraction orchestration: which stages to run, over which videos, and when to commit.

``plan_stages`` builds the stage objects from names and options (applying what later stages ask
of earlier ones, ``Stage.upstream_options``).  ``extract`` runs the unit of work
(``work.process_shard``: a shard of videos, whatever is not cached yet) over a data set, serially
or on dask workers (``runner.py``; a GPU run that reads no media file, ``reads_media``, runs in
this process whatever ``workers`` says), commits periodically (``_commit_due``: never more than
``COMMIT_SHARE`` of the run) and at the end, and returns a summary with where the time went.
No model, decoding or store I/O code lives here.

Timing log: with ``L2L_TIMINGS=FILE`` in the environment, ``extract`` writes a JSON object of
seconds per part (start-up before ``extract``, store set-up, cluster start, per-stage work summed
over videos, staging writes, commits) to FILE at the end; nothing is measured beyond a few clock
reads when it is unset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Sequence

from ..core.errors import ConfigError, L2LError  # noqa: F401 (ConfigError re-exported)
from ..datasets.base import Dataset
from ..stages import STAGES, Stage
from ..store import StoreError, StoreWriteError, create_store
from .process import Run, stage_device
from .plan import Outcome, known_failure, reads_media  # noqa: F401
from .work import process_shard, process_video  # noqa: F401

DEFAULT_STAGES = ("decode", "spectrogram")
COMMIT_EVERY = 64            # videos between periodic commits (what readers see meanwhile: a
                             # crash loses no staged video, the next commit folds it) ...
COMMIT_SECONDS = 120.0       # ... or seconds, whichever comes first, but:
COMMIT_SHARE = 0.05          # the most of the run's time commits may take (``_commit_due``;
                             # a commit costs what it folds, about 20 ms for 64 videos)


@dataclasses.dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    moments: int = 0
    seconds: float = 0.0
    failures: list = dataclasses.field(default_factory=list)
    timings: dict = dataclasses.field(default_factory=dict)    # part -> seconds
    notes: list = dataclasses.field(default_factory=list)      # how the run was made (a line each)

    def add(self, o: Outcome) -> None:
        setattr(self, o.status, getattr(self, o.status) + 1)
        self.moments += o.moments
        if o.status == "failed":
            self.failures.append(o)
        for k, v in o.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v

    def time(self, part: str, seconds: float) -> None:
        self.timings[part] = self.timings.get(part, 0.0) + seconds

    def line(self) -> str:
        return (f"done {self.done} / skipped {self.skipped} / failed {self.failed} "
                f"({self.moments} moments in {self.seconds:.1f} s)")


def resolve_device(device: str, stages: Sequence[Stage] | None = None, check: bool = True) -> str:
    """"auto" -> "cuda" when there is a GPU, else "cpu".  Without a model stage among
    ``stages`` the answer is "cpu" whatever is asked, and torch is not imported for it.  With
    ``check``, "cuda" where torch sees no CUDA device is a ``ConfigError`` (without: the GPUs
    are a remote scheduler's workers')."""
    if stages is not None and not any(s.uses_gpu for s in stages):
        return "cpu"
    if device == "cpu":
        return device
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if check and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA device")
    return device


def _coerce(value: Any, like: Any, where: str) -> Any:
    """``value`` (a string from ``--set``) as the type of the field's default ``like``."""
    if not isinstance(value, str):
        return value
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    for kind in (int, float):
        if isinstance(like, kind):
            try:
                return kind(value)
            except ValueError:
                raise ConfigError(f"{where}={value!r}: not a{'n' if kind is int else ''} "
                                  f"{kind.__name__}") from None
    return value


def _config(cls, name: str, opts: dict):
    """``cls.Config`` with ``opts`` (strings converted to each field's type); an ``L2LError``
    raised by the config's own checks gets the stage's name in front."""
    defaults = cls.Config()
    try:
        return dataclasses.replace(defaults, **{k: _coerce(v, getattr(defaults, k), f"{name}.{k}")
                                                for k, v in opts.items()})
    except ConfigError as e:
        raise ConfigError(f"stage {name}: {e.line()}") from None


def plan_stages(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[Stage]:
    """Stage objects in dependency order.  ``options``: stage name -> config field -> value
    (strings are converted to the field's type).  Every input of a stage must be the source or an
    output of an earlier stage."""
    options = {k: dict(v) for k, v in (options or {}).items()}
    unknown = [n for n in list(names) + list(options) if n not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
    for name in names:                   # what later stages ask of earlier ones (teacher: clips)
        for up, fields in _upstream(name, options.get(name, {})).items():
            if up in options and any(options[up].get(k, v) != v for k, v in fields.items()):
                raise ConfigError(f"stage {name} needs {up} options {fields}, but they were set "
                                  f"otherwise: {options[up]}")
            options.setdefault(up, {}).update(fields)
    stages, produced = [], {"source"}
    for name in names:
        cls = STAGES[name]
        defaults = cls.Config()
        fields = {f.name for f in dataclasses.fields(defaults)}
        opts = options.get(name, {})
        bad = [k for k in opts if k not in fields]
        if bad:
            raise ConfigError(f"stage {name!r} has no option {', '.join(bad)} "
                              f"(options: {', '.join(sorted(fields))})")
        stage = cls(_config(cls, name, opts))
        missing = [i for i in stage.inputs if i not in produced]
        if missing:
            raise ConfigError(f"stage {name!r} needs {', '.join(missing)}: add the stage that makes it "
                              "earlier in --stages")
        produced.update(stage.outputs)
        stages.append(stage)
    return stages


def _upstream(name: str, opts: dict) -> dict:
    cls = STAGES[name]
    if cls.upstream_options is Stage.upstream_options:
        return {}
    try:
        return cls(_config(cls, name, opts)).upstream_options()
    except (TypeError, L2LError):
        return {}                        # reported with its stage below


def stored_outputs(stages: Sequence[Stage]) -> list[str]:
    return [o for s in stages for o in s.outputs if o not in s.transient]


def extract(dataset: Dataset, store_path, *, stages: Sequence[Stage], subset: str | None = None,
            limit: int | None = None, device: str = "auto", workers: int = 1,
            scheduler: str | None = None, backend: str | None = None, progress: bool = True,
            missing_reason: str = "", retry_failed: bool = False) -> Summary:
    """Run ``stages`` over the data set's videos into the store at ``store_path``."""
    from . import runner

    t0 = time.perf_counter()
    summary = Summary()
    # Everything that can stop the run is checked before the store is created or touched.
    device = resolve_device(device, stages, check=scheduler is None)   # (a scheduler's
                                                                       # workers have the GPU)
    _check_media_found(store_path, _videos(dataset, subset, limit), stages, missing_reason)
    stages = [s.for_device(stage_device(s, device)) for s in stages]
    embedded = scheduler is None and workers > 1
    cpu_models = device == "cpu" and any(s.uses_gpu for s in stages)   # (processes scale best)
    if embedded and not cpu_models and not reads_media(store_path, _videos(dataset, subset, limit),
                                                       stages, skip_failed=not retry_failed):
        embedded = False          # only stored inputs to read: here, with every core (see below)
        summary.notes.append(f"every video's decoded inputs are stored: one process runs the "
                             f"stages and reads the store with {len(os.sched_getaffinity(0))} threads (not "
                             f"{workers} worker processes)")
    cluster = runner.start_cluster(workers, device=device, stages=stages) if embedded else None
    here = Run(store_path, device) if cluster is None and scheduler is None else None
    try:
        t = time.perf_counter()
        if here is not None:                         # load models here: a missing weight file
            here.prepare(stages)                     # stops the run with one line before the
                                                     # store is made (workers check it at
                                                     # start-up); the other stages are set up
                                                     # in the background
        store = create_store(store_path, backend)
        c = time.perf_counter()
        store.commit()                               # fold anything a crashed run left staged
        summary.time("commit", time.perf_counter() - c)
        _record_store_info(store, dataset, stages)
        videos = _videos(dataset, subset, limit)
        if not retry_failed:
            todo = []
            for v in videos:
                known = known_failure(store, v, stages)
                if known is None:
                    todo.append(v)
                else:
                    summary.add(known)
            videos = todo
        summary.time("setup", time.perf_counter() - t)
        if cluster is None and scheduler is None:
            run = runner.run_serial(str(store.path), videos, stages, device=device,
                                    progress=progress, missing_reason=missing_reason,
                                    commit_every=COMMIT_EVERY, run=here)
        else:
            run = runner.run_dask(str(store.path), videos, stages, device=device, workers=workers,
                                  scheduler=scheduler, cluster=cluster, progress=progress,
                                  missing_reason=missing_reason, timings=summary.timings)
        last, cost = time.monotonic(), 0.0
        pending = 0
        try:
            for outcome in run:
                summary.add(outcome)
                pending += outcome.status != "skipped"
                if _commit_due(pending, time.monotonic() - last, cost):
                    c = time.perf_counter()
                    store.commit()
                    cost = time.perf_counter() - c
                    summary.time("commit", cost)
                    pending, last = 0, time.monotonic()
        except StoreWriteError:                      # (a full disk): what was staged before
            with contextlib.suppress(StoreError):    # it is kept if it can be
                store.commit()
            raise
        c = time.perf_counter()
        store.commit()
        summary.time("commit", time.perf_counter() - c)
    finally:
        if here is not None:
            here.close()                             # its threads, models and store go
        if cluster is not None:
            cluster.close()
    summary.seconds = time.perf_counter() - t0
    _write_timings(summary, t0)
    return summary


def _check_media_found(store_path, videos, stages: Sequence[Stage], missing_reason: str) -> None:
    """``ConfigError`` when not one of ``videos`` has its media file but the run needs some (a
    mistyped ``--videos`` folder): stopping here writes nothing, where going on would fill the
    store with failures."""
    if not videos or any(v.path is not None for v in videos):
        return
    if reads_media(store_path, videos, stages, skip_failed=False):
        raise ConfigError(f"none of the {len(videos)} videos to extract has a media file "
                          f"({missing_reason or 'no file found for any listed video'}; "
                          f"e.g. {videos[0].id!r}); nothing was written")


def _commit_due(pending: int, since: float, cost: float) -> bool:
    """Whether to commit now: ``pending`` videos finished since the last commit, ``since``
    seconds ago, which took ``cost`` seconds.  Every ``COMMIT_EVERY`` videos, unless that would
    make commits more than ``COMMIT_SHARE`` of the time; after ``COMMIT_SECONDS`` in any case."""
    if not pending:
        return False
    return since > COMMIT_SECONDS or (pending >= COMMIT_EVERY and
                                      since >= cost / COMMIT_SHARE - cost)


def _videos(dataset: Dataset, subset: str | None, limit: int | None) -> list:
    videos = list(dataset.subset(subset).videos)
    return videos if limit is None else videos[:limit]


def _write_timings(summary: Summary, t0: float) -> None:
    """The ``L2L_TIMINGS`` log (see the module docstring)."""
    path = os.environ.get("L2L_TIMINGS")
    if not path:
        return
    out = {k: round(v, 4) for k, v in summary.timings.items()}
    out["extract"] = round(summary.seconds, 4)
    launched = os.environ.get("L2L_T0")        # the wall clock when the command was launched
    if launched:
        out["before_extract"] = round(time.time() - summary.seconds - float(launched), 4)
    out.update(videos=summary.done, moments=summary.moments)
    with open(path, "w") as f:
        json.dump(out, f)


def _record_store_info(store, dataset: Dataset, stages: Sequence[Stage]) -> None:
    info = store.info()
    new = {}
    classes = list(dataset.classes)
    if info.get("classes") not in (None, classes):
        raise ConfigError(f"{store.path}: holds data set {info.get('dataset')!r} with another class "
                          "list; extract into a new store")
    if info.get("classes") is None:
        new.update(dataset=dataset.name, classes=classes)
    if dataset.split and info.get("split") is None:    # how the adapter made the subsets
        new["split"] = dataset.split
    models = any(s.uses_gpu for s in stages)
    if models and "flops_per_moment" not in info:  # measured once, with torch's flop counter,
        from ..models.cost import flops_per_moment  # when the first model stage runs
        new["flops_per_moment"] = flops_per_moment(num_classes=len(classes))
    fields = list(dict.fromkeys(list(info.get("fields", [])) + stored_outputs(stages)))
    if fields != info.get("fields"):
        new["fields"] = fields
    stage_info = dict(info.get("stages", {}))
    stage_info.update({s.name: {"config": s.config_dict(), "config_hash": s.config_hash} for s in stages})
    if stage_info != info.get("stages"):
        new["stages"] = stage_info
    store.update_info(new)                         # one write of the index

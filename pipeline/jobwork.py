"""What a step of an extraction stream (``work.py``) does to one video, a ``plan.Job``, or to
a group of them: run a stage and keep its outputs with their provenance (``run_one``,
``run_stages``; ``run_group``: the batchable stages over a group, one forward pass spanning its
videos), read their stored inputs (``read_inputs``, ``prefetch``: ``read_many``), write a parcel
of finished videos (``stage_parcel``: one ``put_many``), and record a video's failure as one
line (``fail``).  A video's error (``ERRORS``) fails that video only; ``stage_parcel`` lets a
``StoreWriteError`` (the store cannot be written at all) through, to stop the run.

Not here: the steps, their threads and their order (``work.py``, ``steps.py``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..stages.decode import DecodeError, media_source
from ..store import ArrayRecord, Failure, Put, StoreError, StoreWriteError, VideoMeta
from .plan import Job, Outcome
from .process import Run, stage_device

ERRORS = (DecodeError, StoreError, OSError, ValueError, RuntimeError)


def prefetch(store, group: list[Job], stage: Stage) -> None:
    """Read what ``stage`` needs from the store for ``group`` (the read step).  An error
    leaves the inputs unread: ``run_group`` reads them again and records the failure."""
    members = [j for j in group if j.outcome is None and stage.name in j.fresh]
    try:
        read_inputs(store, members, stage)
    except ERRORS:
        pass


def run_stages(run: Run, job: Job, stages: Sequence[Stage], versions: dict) -> None:
    for stage in stages:
        if stage.name in job.fresh:
            run_one(run, job, stage, versions)


def keep(job: Job, stage: Stage, out: dict, versions: dict, seconds: float) -> None:
    job.timings[stage.name] = job.timings.get(stage.name, 0.0) + seconds
    if stage.name == "decode":
        job.decoded = out
        job.n = len(out["times"])
    job.values.update({o: out[o] for o in stage.outputs})
    if stage.name in job.todo:
        up = {i: job.keys[i] for i in stage.inputs}
        for o in stage.outputs:
            if o not in stage.transient:
                job.arrays[o] = out[o]
                job.records[o] = ArrayRecord(stage=stage.name, config=stage.config_dict(),
                                             key=job.keys[o], upstream=up, versions=versions)


def run_one(run: Run, job: Job, stage: Stage, versions: dict) -> None:
    job.current = stage.name
    run.ensure_setup(stage)
    need = [i for i in stage.inputs if i != "source" and i not in job.values]
    if need:
        job.values.update(run.store.read(job.video.id, need))
    t = time.perf_counter()
    out = stage.run({i: job.values[i] for i in stage.inputs if i != "source"},
                    source=media_source(job.video), device=stage_device(stage, run.device))
    keep(job, stage, out, versions, time.perf_counter() - t)


def read_inputs(store, members: list[Job], stage: Stage) -> None:
    """Stored inputs of ``members`` for ``stage``, read with ``read_many`` (one contiguous read
    per segment run) for all videos that need the same arrays."""
    by_need: dict[tuple, list[Job]] = {}
    for j in members:
        need = tuple(i for i in stage.inputs if i != "source" and i not in j.values)
        if need:
            by_need.setdefault(need, []).append(j)
    for need, js in by_need.items():
        t = time.perf_counter()
        batch = store.read_many(list(need), [j.video.id for j in js])
        for k, j in enumerate(js):
            j.values.update({n: batch.video(k, n) for n in need})
        per = (time.perf_counter() - t) / len(js)
        for j in js:
            j.timings["read"] = j.timings.get("read", 0.0) + per


def run_group(run: Run, group: list[Job], stages: Sequence[Stage], versions: dict) -> None:
    store, device = run.store, run.device
    for stage in stages:
        members = [j for j in group if j.outcome is None and stage.name in j.fresh]
        if not members:
            continue
        for j in members:
            j.current = stage.name
        try:
            run.ensure_setup(stage)
            read_inputs(store, members, stage)
        except ERRORS as e:
            for j in members:
                fail(store, j, e)
            continue
        if not stage.batchable:
            for j in members:
                try:
                    run_one(run, j, stage, versions)
                except ERRORS as e:
                    fail(store, j, e)
            continue
        inputs = [{i: j.values[i] for i in stage.inputs if i != "source"} for j in members]
        dev = stage_device(stage, device)
        t = time.perf_counter()
        try:
            outs = stage.run_batch(inputs, device=dev)
        except ERRORS:                      # find the video(s) at fault: one by one
            outs = []
            for j, x in zip(members, inputs):
                try:
                    outs.append(stage.run_batch([x], device=dev)[0])
                except ERRORS as e:
                    fail(store, j, e)
                    outs.append(None)
        seconds = time.perf_counter() - t
        total = max(1, sum(j.moments() for j in members))
        for j, out in zip(members, outs):
            if out is not None and j.outcome is None:
                keep(j, stage, out, versions, seconds * max(1, j.moments()) / total)


def stage_parcel(store, staged: list[tuple[Put, Job]]) -> None:
    """One ``put_many`` for the shard's finished videos; then their outcomes are "done"."""
    if not staged:
        return
    t = time.perf_counter()
    try:
        store.put_many([p for p, _ in staged])
    except ERRORS as e:
        if isinstance(e, StoreWriteError):   # a full disk, a read-only store: the run stops
            raise
        for _, j in staged:
            j.current = "store"
            fail(store, j, e)
        return
    per = (time.perf_counter() - t) / len(staged)
    for p, j in staged:
        j.timings["write"] = j.timings.get("write", 0.0) + per
        j.outcome = Outcome(j.video.id, "done", seconds=time.perf_counter() - j.t0,
                            moments=p.meta.num_moments, timings=dict(j.timings))
        j.arrays = {}


def fail(store, job: Job, e: BaseException) -> None:
    video = job.video
    where = str(video.path or video.id)
    if isinstance(e, DecodeError):
        line = f"{where}: {e.reason}"
    else:
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        line = msg if where in msg else f"{where}: {msg}"
    key = job.keys.get("frames", "") if isinstance(e, DecodeError) and job.current == "decode" else ""
    store.record_failure(Failure(id=video.id, stage=job.current, reason=line,
                                 source=str(video.path or ""), key=key, subset=video.subset,
                                 labels=tuple(video.labels)))
    job.outcome = Outcome(video.id, "failed", job.current, line, time.perf_counter() - job.t0,
                          timings=dict(job.timings))
    job.values, job.arrays, job.decoded = {}, {}, None


def meta_of(video: VideoRecord, decoded: dict | None, store) -> VideoMeta:
    if decoded is None:                    # decode cached: keep its facts, refresh labels/subset
        old = store.meta(video.id)
        return dataclasses.replace(old, labels=tuple(video.labels), subset=video.subset)
    return VideoMeta(id=video.id, labels=tuple(video.labels), subset=video.subset,
                     duration=float(decoded["duration"]), fps=float(decoded["fps"]),
                     num_moments=int(len(decoded["times"])), has_audio=bool(decoded["has_audio"]),
                     source=str(video.path))

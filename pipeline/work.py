"""The unit of extraction work: one shard (a few videos; in the serial runner, every video as
one stream) in whatever process runs it.

``process_stream`` (``process_shard``: the same, as a list) asks ``plan.py`` which stages each
video still needs, runs them, and stages the new arrays with one ``Store.put_many`` per
parcel (each array is written once, by this process, into what becomes an immutable segment at
commit).  Stages before the first ``batchable`` one run video by video (decode streams the file;
its transient audio windows go to the spectrogram and are dropped); from the first batchable
stage on, every stage runs over a *group* of videos at once: ``run_batch`` over all the videos
that need it (one forward pass spans videos, at least ``BATCH_MOMENTS`` moments when there are
that many; on a GPU, two forward passes' worth), with inputs kept in memory from earlier stages
or read from the store with ``read_many`` (contiguous blocks; the next group's, in a reader
thread, while this one runs).
A video that fails is recorded as a one-line failure; the others go on.

Not here: what a video needs (``plan.py``), where the shards run (``runner.py``) or the data-set
loop and commits (``extract.py``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator, Sequence

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..stages.decode import DecodeError, media_source
from .ahead import ahead
from .plan import Job, Outcome, plan
from .process import Run, stage_device
from ..store import (ArrayRecord, Failure, Put, StoreError, StoreWriteError, VideoMeta,
                     library_versions)

BATCH_MOMENTS = 512          # moments a group gathers before its batchable stages run
PARCEL_BYTES = 256 << 20     # staged bytes after which a parcel is written (bounds memory)
ERRORS = (DecodeError, StoreError, OSError, ValueError, RuntimeError)


def process_video(store_path: str, video: VideoRecord, stages: Sequence[Stage], device: str = "cpu",
                  missing_reason: str = "") -> Outcome:
    """Extract one video into the store (staged; visible after the next commit), as a run of
    its own."""
    return process_shard(store_path, [video], stages, device, missing_reason)[0]


def process_shard(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage],
                  device: str = "cpu", missing_reason: str = "") -> list[Outcome]:
    """Extract ``videos`` into the store as a run of their own (a ``Run`` made here and closed
    at the end); one ``Outcome`` per video, in order."""
    with Run(store_path, device) as run:
        return list(process_stream(run, videos, stages, missing_reason))


def process_stream(run: Run, videos: Sequence[VideoRecord], stages: Sequence[Stage],
                   missing_reason: str = "", *, parcel_videos: int | None = None
                   ) -> Iterator[Outcome]:
    """Extract ``videos`` into ``run``'s store, yielding each video's ``Outcome`` (in order)
    once its arrays are staged or it failed; ``run`` (``process.Run``) owns the stages' set-ups,
    the store object and the threads used here.  The stages that read the media file (decode)
    run in up to ``run.decode_slots()`` threads at once (``ahead.py``), and keep running while
    the caller works on what was yielded (a commit, say): no pause between parcels.  The per-video CPU stages
    after them (the spectrogram) run in a helper thread, overlapping the next decodes (FFmpeg
    and numpy release the GIL); model stages run in this thread.  A parcel is written every
    ``PARCEL_BYTES``, or every ``parcel_videos`` finished videos, and at the end, by the
    helper thread too (its outcomes are "done" once written)."""
    store, device = run.store, run.device
    store.read_threads = run.cores()        # stored inputs: chunks decompressed on every core
    versions = library_versions()
    first_batch = next((i for i, s in enumerate(stages) if s.batchable), len(stages))
    n_source = next((i for i, s in enumerate(stages[:first_batch]) if "source" not in s.inputs),
                    first_batch)
    n_helper = next((i for i in range(n_source, first_batch) if stages[i].uses_gpu), first_batch)
    reads_source, after = stages[:n_source], stages[n_source:n_helper]
    rest = stages[n_helper:first_batch]             # per-video model stages: this thread
    jobs = [Job(v) for v in videos]
    group: list[Job] = []
    staged: list[tuple[Put, Job]] = []
    pending = None
    told = 0                                        # jobs whose outcome was yielded
    writes: list = []                               # parcels being written by the helper
    settling = None                                 # the helper's settle of the last video
    cpu_only = not rest and first_batch == len(stages)
    group_moments = _group_moments(stages[first_batch], device) if first_batch < len(stages) else 0

    def flush() -> None:
        """Write the parcel in the helper thread (after the stages queued there before it; when
        ``settle`` runs there, at once): the decodes and this thread go on meanwhile (each
        parcel is its own directory)."""
        nonlocal staged
        if staged and cpu_only:
            _stage(store, staged)
        elif staged:
            writes.append(run.pool("stages").submit(_stage, store, staged))
        staged = []

    ready = None            # a group whose stored inputs the reader thread is reading

    def launch(g: list[Job]) -> None:
        """Start reading group ``g``'s stored inputs in the reader thread, then run the group
        before it (read while this one was being put together): reading overlaps the model,
        and the helper's writes."""
        nonlocal ready
        fut = run.pool("read").submit(_prefetch, store, g, stages[first_batch])
        if ready is not None:
            run_ready()
        ready = (g, fut)

    def run_ready() -> None:
        nonlocal ready
        (g, fut), ready = ready, None
        fut.result()
        _run_group(run, g, stages[first_batch:], versions, staged)

    def settle(job: Job, fut) -> None:
        nonlocal group, staged
        try:
            fut.result()
            _run_stages(run, job, rest, versions)
        except ERRORS as e:
            _fail(store, job, e)
            return
        group.append(job)
        if first_batch == len(stages):
            _run_group(run, group, [], versions, staged)
            group = []
        elif sum(j.moments() for j in group) >= group_moments or len(group) >= 64:
            launch(group)
            group = []
        if (sum(a.nbytes for p, _ in staged for a in p.arrays.values()) >= PARCEL_BYTES
                or (parcel_videos and len(staged) >= parcel_videos)):
            flush()

    slots = run.decode_slots() if len(jobs) > 1 else 1
    reads_source = [run.with_threads(s, slots) for s in reads_source]   # (``ahead.py``)

    def start(job: Job) -> BaseException | None:
        try:
            plan(store, job, stages, missing_reason)
            if job.outcome is None:
                for stage in reads_source:
                    if stage.name in job.fresh:
                        _run_one(run, job, stage, versions)
        except ERRORS as e:
            return e
        return None

    for job, error in ahead(start, jobs, slots, run.pool("decode", slots) if slots > 1 else None):
        if error is not None:
            _fail(store, job, error)
        elif job.outcome is None:
            fut = run.pool("stages").submit(_run_stages, run, job, after, versions)
            if cpu_only:                # no model stage: the helper settles it too, at once;
                if settling is not None:        # the previous video's settle (and parcel) is
                    settling.result()           # done before its outcome can be told
                settling = run.pool("stages").submit(settle, job, fut)
            else:
                if pending is not None:
                    settle(*pending)
                pending = (job, fut)
        while told < len(jobs) and jobs[told].outcome is not None:
            yield jobs[told].outcome
            told += 1
    if pending is not None:
        settle(*pending)
    if settling is not None:
        settling.result()
    if group:
        launch(group)
    if ready is not None:
        run_ready()
    flush()
    for fut in writes:
        fut.result()
    for job in jobs[told:]:
        yield job.outcome


def _group_moments(stage: Stage, device: str) -> int:
    """Moments a group gathers before ``stage`` (the first batchable one) runs over it:
    ``BATCH_MOMENTS``, or on a GPU two of the model's forward passes, so that its last pass
    (padded to a power of two) wastes little (a 600-moment group would be one pass of 1,024)."""
    size = getattr(stage, "batch_size", None)
    if size is None or stage_device(stage, device) == "cpu":
        return BATCH_MOMENTS
    return max(BATCH_MOMENTS, 2 * size(device))


def _prefetch(store, group: list[Job], stage: Stage) -> None:
    """Read what ``stage`` needs from the store for ``group`` (the reader thread).  An error
    leaves the inputs unread: ``_run_group`` reads them again and records the failure."""
    members = [j for j in group if j.outcome is None and stage.name in j.fresh]
    try:
        _read_inputs(store, members, stage)
    except ERRORS:
        pass


def _run_stages(run: Run, job: Job, stages: Sequence[Stage], versions: dict) -> None:
    for stage in stages:
        if stage.name in job.fresh:
            _run_one(run, job, stage, versions)


def _keep(job: Job, stage: Stage, out: dict, versions: dict, seconds: float) -> None:
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


def _run_one(run: Run, job: Job, stage: Stage, versions: dict) -> None:
    job.current = stage.name
    run.ensure_setup(stage)
    need = [i for i in stage.inputs if i != "source" and i not in job.values]
    if need:
        job.values.update(run.store.read(job.video.id, need))
    t = time.perf_counter()
    out = stage.run({i: job.values[i] for i in stage.inputs if i != "source"},
                    source=media_source(job.video), device=stage_device(stage, run.device))
    _keep(job, stage, out, versions, time.perf_counter() - t)


def _read_inputs(store, members: list[Job], stage: Stage) -> None:
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


def _run_group(run: Run, group: list[Job], stages: Sequence[Stage], versions: dict,
               staged: list) -> None:
    store, device = run.store, run.device
    for stage in stages:
        members = [j for j in group if j.outcome is None and stage.name in j.fresh]
        if not members:
            continue
        for j in members:
            j.current = stage.name
        try:
            run.ensure_setup(stage)
            _read_inputs(store, members, stage)
        except ERRORS as e:
            for j in members:
                _fail(store, j, e)
            continue
        if not stage.batchable:
            for j in members:
                try:
                    _run_one(run, j, stage, versions)
                except ERRORS as e:
                    _fail(store, j, e)
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
                    _fail(store, j, e)
                    outs.append(None)
        seconds = time.perf_counter() - t
        total = max(1, sum(j.moments() for j in members))
        for j, out in zip(members, outs):
            if out is not None and j.outcome is None:
                _keep(j, stage, out, versions, seconds * max(1, j.moments()) / total)
    for j in group:
        if j.outcome is None:
            meta = _meta(j.video, j.decoded, store)
            replace = j.decoded is not None and "decode" in j.todo
            staged.append((Put(meta, j.arrays, j.records, replace), j))
            j.values = {}                    # transients (audio windows, clips) go now


def _stage(store, staged: list[tuple[Put, Job]]) -> None:
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
            _fail(store, j, e)
        return
    per = (time.perf_counter() - t) / len(staged)
    for p, j in staged:
        j.timings["write"] = j.timings.get("write", 0.0) + per
        j.outcome = Outcome(j.video.id, "done", seconds=time.perf_counter() - j.t0,
                            moments=p.meta.num_moments, timings=dict(j.timings))
        j.arrays = {}


def _fail(store, job: Job, e: BaseException) -> None:
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
    job.values, job.arrays = {}, {}


def _meta(video: VideoRecord, decoded: dict | None, store) -> VideoMeta:
    if decoded is None:                    # decode cached: keep its facts, refresh labels/subset
        old = store.meta(video.id)
        return dataclasses.replace(old, labels=tuple(video.labels), subset=video.subset)
    return VideoMeta(id=video.id, labels=tuple(video.labels), subset=video.subset,
                     duration=float(decoded["duration"]), fps=float(decoded["fps"]),
                     num_moments=int(len(decoded["times"])), has_audio=bool(decoded["has_audio"]),
                     source=str(video.path))

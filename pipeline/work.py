"""The unit of extraction work: one shard (a few videos; in the serial runner, every video as
one stream) in whatever process runs it.

``process_stream`` (``process_shard``: the same, as a list) asks ``plan.py`` which stages each
video still needs, runs them, and stages the new arrays with one ``Store.put_many`` per
parcel (each array is written once, by this process, into what becomes an immutable segment at
commit).  The work is a chain of steps, each one thread that owns its state, joined by bounded
queues (``steps.py``), so that a slow step holds up the ones before it and memory stays bounded:

- *decode*: ``plan``, then the stages that read the media file, several videos at once (up to
  ``Run.decode_slots``, one decoder thread each; a freed slot starts the next video at once);
  handed on in order;
- *compute*: the per-video stages after them (the spectrogram: decode's transient audio windows
  go to it and are dropped); then the videos are gathered into *groups* for the batchable
  stages (at least ``BATCH_MOMENTS`` moments, or ``GROUP_VIDEOS`` videos; on a GPU, two forward
  passes' worth, ``_group_moments``);
- *read*: a group's stored inputs (``read_many``: contiguous blocks), while the model step runs
  over the group before it;
- *model*: every stage from the first batchable one over the group (``run_batch``: one forward
  pass spans videos); the finished videos' ``Put``s gathered into a parcel (``PARCEL_BYTES``,
  or ``parcel_videos`` videos);
- *write*: one ``put_many`` per parcel; then its videos' outcomes go to the caller, in order.

Without a batchable stage, compute makes the parcels and there is no read or model step.  A
video that fails is recorded as a one-line failure (``jobwork.fail``) and the others go on; a
store that cannot be written stops the run.  What a step does to a video: ``jobwork.py``.

Not here: what a video needs (``plan.py``), where the shards run (``runner.py``) or the data-set
loop and commits (``extract.py``).
"""
from __future__ import annotations

from collections import deque
from concurrent import futures
from typing import Iterator, Sequence

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..store import Put, library_versions
from .jobwork import ERRORS, fail, meta_of, prefetch, run_group, run_stages, stage_parcel
from .plan import Job, Outcome, plan
from .process import Run, stage_device
from .steps import Steps, Stopped

BATCH_MOMENTS = 512          # moments a group gathers before its batchable stages run ...
GROUP_VIDEOS = 64            # ... or videos
PARCEL_BYTES = 256 << 20     # staged bytes after which a parcel is written (bounds memory)


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
    the store object and the decode threads.  The work is a chain of steps, one thread each,
    joined by bounded queues (``steps.py``): *decode* (``plan`` and the stages that read the
    media file, up to ``run.decode_slots()`` videos at once, handed on in order), *compute*
    (the per-video stages after them: the spectrogram; then videos gathered into groups),
    *read* (a group's stored inputs, ``read_many``, while the group before it is in the model),
    *model* (the batchable stages over a group; the finished videos' ``Put``s gathered into a
    parcel of ``PARCEL_BYTES``, or of ``parcel_videos`` videos), *write* (one ``put_many`` per
    parcel); this generator yields the outcomes, and keeps running while the caller works on
    them (a commit, say).  Without a batchable stage, compute makes the parcels and there is no
    read or model step.  A video's error is its one-line failure and the others go on; an error
    of the store as a whole (``StoreWriteError``: a full disk) stops every step and is raised
    here.  However the generator ends (done, that error, closed midway), its threads have
    ended when it does."""
    flow = _Flow(run, stages, missing_reason, parcel_videos,
                 slots=run.decode_slots() if len(videos) > 1 else 1)
    steps = Steps()
    try:
        decoded, groups, out = steps.pipe(handoff=True), steps.pipe(handoff=True), steps.pipe()
        steps.start("decode", flow.decode, videos, decoded)
        if flow.batch:
            read = steps.pipe(handoff=True)
            parcels = steps.pipe(handoff=True)
            steps.start("compute", flow.compute, decoded, groups)
            steps.start("read", flow.read, groups, read)
            steps.start("model", flow.model, read, parcels)
        else:
            parcels = groups
            steps.start("compute", flow.compute, decoded, parcels)
        steps.start("write", flow.write, parcels, out)
        for jobs in out:
            for job in jobs:
                yield job.outcome
    except Stopped:
        steps.close()
        raise steps.failed() from None
    finally:
        steps.close()


class _Flow:
    """What the steps of one ``process_stream`` share, read-only (the run, the stages split by
    where they run, the bounds), and the steps themselves: each method is one step's thread
    body, its local variables the state that step owns."""

    def __init__(self, run: Run, stages: Sequence[Stage], missing_reason: str,
                 parcel_videos: int | None, slots: int):
        self.run, self.store, self.slots, self._missing = run, run.store, slots, missing_reason
        self.store.read_threads = run.cores()   # stored inputs: chunks decompressed on every core
        self.versions = library_versions()
        self.stages = stages
        first_batch = next((i for i, s in enumerate(stages) if s.batchable), len(stages))
        n_source = next((i for i, s in enumerate(stages[:first_batch]) if "source" not in s.inputs),
                        first_batch)
        self.source = [run.with_threads(s, slots) for s in stages[:n_source]]   # (``Run``)
        # the last ``slots`` videos end the stream while slots fall idle one by one: they decode
        # with every core as FFmpeg threads (a thread count never changes a number)
        self.source_tail = [run.with_threads(s, 1) for s in stages[:n_source]]
        self.per_video = stages[n_source:first_batch]
        self.batch = stages[first_batch:]
        self.group_moments = _group_moments(self.batch[0], run.device) if self.batch else 0
        self.parcel_videos = parcel_videos

    # ---- decode: plan, and the stages that read the media file, ``slots`` videos at once ----
    def _start(self, job: Job, tail: bool = False) -> BaseException | None:
        try:
            plan(self.store, job, self.stages, self._missing)
            if job.outcome is None:
                run_stages(self.run, job, self.source_tail if tail else self.source,
                           self.versions)
        except ERRORS as e:
            return e
        return None

    def decode(self, videos: Sequence[VideoRecord], emit) -> None:
        """Up to ``slots`` videos decode at once, and a slot that frees starts the next video
        even while an earlier one is still decoding (else one long file would leave the other
        slots idle behind it); videos are handed on in order, and one finished video at most
        waits for an earlier one (``slots + 1`` videos' arrays held here at most: a serial run
        orders its videos largest first, so one is enough there).  The last ``slots`` videos
        decode with every core (``source_tail``)."""
        jobs = (Job(v) for v in videos)          # (made as they start: none held past its end)
        if self.slots <= 1:
            for job in jobs:
                self._decoded(job, self._start(job), emit)
            return
        pool, window = self.run.pool("decode", self.slots), deque()
        tail, started = len(videos) - self.slots, 0

        def fill() -> None:                      # start videos while a slot is free
            nonlocal started
            while (len(window) <= self.slots
                   and sum(not f.done() for _, f in window) < self.slots):
                job = next(jobs, None)
                if job is None:
                    return
                window.append((job, pool.submit(self._start, job, started >= tail)))
                started += 1
        try:
            fill()
            while window:
                job, fut = window[0]
                if not fut.done():
                    futures.wait([f for _, f in window if not f.done()],
                                 return_when=futures.FIRST_COMPLETED)
                    fill()
                    continue
                window.popleft()
                fill()
                self._decoded(job, fut.result(), emit)
        finally:                                 # (stopped: nothing is left running)
            for _, fut in window:
                fut.cancel()
            futures.wait([fut for _, fut in window])

    def _decoded(self, job: Job, error: BaseException | None, emit) -> None:
        if error is not None:
            fail(self.store, job, error)
        emit(job)

    # ---- compute: the per-video stages after decode; groups for the batchable ones ----------
    def compute(self, jobs, emit) -> None:
        group, live, moments = [], 0, 0
        parcel = None if self.batch else _Parcel(self.store, self.parcel_videos)
        for job in jobs:
            if job.outcome is None:
                try:
                    run_stages(self.run, job, self.per_video, self.versions)
                except ERRORS as e:
                    fail(self.store, job, e)
            if parcel is not None:               # no batchable stage: parcels made here
                done = parcel.add([job])
                if done is not None:
                    emit(done)
                continue
            group.append(job)
            if job.outcome is None:
                live, moments = live + 1, moments + job.moments()
            if not live or moments >= self.group_moments or live >= GROUP_VIDEOS:
                emit(group)                      # (failed videos alone go on at once)
                group, live, moments = [], 0, 0
        if group:
            emit(group)
        if parcel is not None and parcel.items:
            emit(parcel.take())

    # ---- read: a group's stored inputs, while the model runs over the group before it -------
    def read(self, groups, emit) -> None:
        for group in groups:
            prefetch(self.store, group, self.batch[0])
            emit(group)

    # ---- model: the batchable stages over a group; parcels of the finished videos -----------
    def model(self, groups, emit) -> None:
        parcel = _Parcel(self.store, self.parcel_videos)
        for group in groups:
            run_group(self.run, group, self.batch, self.versions)
            done = parcel.add(group)
            if done is not None:
                emit(done)
        if parcel.items:
            emit(parcel.take())

    # ---- write: one ``put_many`` per parcel; then its videos' outcomes are told -------------
    def write(self, parcels, emit) -> None:
        for items in parcels:
            stage_parcel(self.store, [(put, job) for job, put in items if put is not None])
            emit([job for job, _ in items])
            del items                            # (its arrays go now, not with the next one)


class _Parcel:
    """The videos of the parcel being filled, in order, each with its ``Put`` (``None``: it
    failed or was skipped); owned by the one step that makes the puts."""

    def __init__(self, store, videos: int | None):
        self.store, self.videos = store, videos
        self.items: list[tuple[Job, Put | None]] = []
        self.live = self.nbytes = 0

    def add(self, group: list[Job]) -> list | None:
        """Add ``group`` (its videos finished or failed); the parcel, when it is full now (or
        holds only failures, which need no write and so go on at once), else ``None``."""
        for j in group:
            put = None
            if j.outcome is None:
                meta = meta_of(j.video, j.decoded, self.store)
                put = Put(meta, j.arrays, j.records, j.decoded is not None and "decode" in j.todo)
                j.values, j.decoded = {}, None   # transients (audio windows, clips) go now
                self.live += 1
                self.nbytes += sum(a.nbytes for a in j.arrays.values())
            self.items.append((j, put))
        if (not self.live or self.nbytes >= PARCEL_BYTES
                or (self.videos and self.live >= self.videos)):
            return self.take()
        return None

    def take(self) -> list:
        items, self.items, self.live, self.nbytes = self.items, [], 0, 0
        return items


def _group_moments(stage: Stage, device: str) -> int:
    """Moments a group gathers before ``stage`` (the first batchable one) runs over it:
    ``BATCH_MOMENTS``, or on a GPU two of the model's forward passes, so that its last pass
    (padded to a power of two) wastes little (a 600-moment group would be one pass of 1,024)."""
    size = getattr(stage, "batch_size", None)
    if size is None or stage_device(stage, device) == "cpu":
        return BATCH_MOMENTS
    return max(BATCH_MOMENTS, 2 * size(device))



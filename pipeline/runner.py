"""Where the shards run: in this process, or as dask.distributed tasks.

``run_serial`` runs every video here as one stream (``work.process_stream``).  ``run_dask`` runs
shards as dask tasks on an embedded single-machine cluster (``start_cluster``, made by
``cluster.local_cluster``: ``workers`` processes, one thread each, started once per run, while
the parent sets the store up) or on an existing cluster (``scheduler``: the address of a
``dask scheduler`` whose ``dask worker``s, on any number of machines, see the store at the same
path).

How the work is cut: a task is a *shard* of a few videos (about four shards per worker, at most
``SHARD_VIDEOS``; with a batchable model stage, enough videos for ``BATCH_MOMENTS`` moments when
the store knows their lengths).  The worker runs every stage the shard needs itself, model stages
included (on its own GPU: the embedded cluster gives each worker one of the machine's GPUs,
round-robin), and writes the shard's arrays once, into a parcel of its own that commit turns
into a segment by a rename.  Only small ``Outcome`` records come back through the scheduler.  On
an external cluster, shards with a model stage on CUDA ask for the ``GPU`` resource, so they run
only on workers started with ``--resources GPU=1``.

Start-up: before any shard is submitted, every worker makes the run's ``process.Run`` (held by
the dask worker itself, ``worker_run``: one run at a time, the previous one closed, so a worker
that served two runs holds one run's models, not both), unpickles the stages into it, imports
their modules and sets them up (models load once per worker and run), in parallel, and says
how long it took.  A worker that cannot (an import error, a class it cannot unpickle, a weights
file it cannot read) fails the run with one line naming the cause; a cluster that does not
answer within ``START_TIMEOUT`` seconds fails it too: no silent hang.

Failures: a video that fails to decode comes back as a failure ``Outcome`` (recorded in the
store) and is not retried; a task that raises, or whose worker dies, is retried (``retries``,
and dask's ``allowed-failures`` for dead workers); a shard that still fails is recorded as a
``worker`` failure of each of its videos.  A task that ran twice (its worker died after
``put_many``) leaves two parcels of the same videos; commit keeps the later one only.
"""
from __future__ import annotations

import math
import os
import pickle
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

from tqdm import tqdm

from ..core.errors import L2LError
from ..core.media import pin_thread_reformatter
from ..datasets.base import VideoRecord
from ..stages import Stage
from ..store import Failure, open_store
from .cluster import local_cluster
from .plan import Outcome
from .process import Run
from .work import BATCH_MOMENTS, process_stream

SHARD_VIDEOS = 16            # most videos per dask task
SORT_VIDEOS = 4096           # most videos ordered largest first (``largest_first``)
SERIAL_SHARD_VIDEOS = 4      # videos per parcel in the serial runner (one parcel, one segment)
START_TIMEOUT = float(os.environ.get("L2L_START_TIMEOUT", "120"))   # seconds
RESOURCE_WAIT = float(os.environ.get("L2L_RESOURCE_WAIT", "30"))   # seconds, for a worker
#                                                with the model's resources to (re)join
GPU_BATCH = BATCH_MOMENTS    # kept for callers of the old keyword


class RunnerError(L2LError, RuntimeError):
    """The workers cannot run the extraction (start-up failed or timed out); one line."""


def _bar(total: int, progress: bool):
    return tqdm(total=total, unit="video", disable=not progress, dynamic_ncols=True,
                desc="extract")


def largest_first(videos: Sequence[VideoRecord]) -> list[VideoRecord]:
    """``videos``, the largest media file first (file size as the cost of decoding it; no file:
    last; a stable sort), so that the longest decodes start first and the run does not end on
    one worker decoding a big file while the others wait (longest-processing-time-first: on
    ``bench_cli.py --realistic``'s six files, single-core decodes of 17, 17, 17, 2.7, 10.4 and
    16.8 s in list order, two workers end after 46.9 s in list order and 44.2 s largest first,
    40.5 s being an even split).  Beyond ``SORT_VIDEOS`` videos, the list as it is (the tail is a
    small part of such a run, and a stat per file is not free on a network file system)."""
    if len(videos) > SORT_VIDEOS:
        return list(videos)

    def size(v) -> int:
        try:
            return os.stat(v.path).st_size if v.path is not None else -1
        except OSError:
            return -1
    return sorted(videos, key=size, reverse=True)


def make_shards(videos: Sequence[VideoRecord], *, max_videos: int, moments: dict | None = None,
                min_moments: int = 0) -> list[list[VideoRecord]]:
    """Consecutive videos, at most ``max_videos`` per shard; with ``min_moments``, a shard
    closes as soon as its known moments (``moments[id]``) reach it."""
    shards, cur, m = [], [], 0
    for v in videos:
        cur.append(v)
        m += (moments or {}).get(v.id, 0)
        if len(cur) >= max_videos or (min_moments and m >= min_moments):
            shards.append(cur)
            cur, m = [], 0
    if cur:
        shards.append(cur)
    return shards


def _shards(store_path: str, videos, stages, max_videos: int) -> list[list[VideoRecord]]:
    if any(s.batchable for s in stages):      # model stages: forward passes of >= 512 moments
        moments = open_store(store_path).moments([v.id for v in videos])
        return make_shards(videos, max_videos=max(max_videos, 64), moments=moments,
                           min_moments=BATCH_MOMENTS)
    return make_shards(videos, max_videos=max_videos)


def run_serial(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage], *,
               device: str, progress: bool = True, missing_reason: str = "",
               commit_every: int = 64, run: Run | None = None, **_) -> Iterator[Outcome]:
    """Every video here, as one stream (``work.process_stream``: decode never waits for a
    parcel to be written or for the caller's commit), largest file first (``largest_first``: the
    run does not end on one core decoding a big file), a parcel every ``SERIAL_SHARD_VIDEOS``
    (at most ``commit_every``) videos; model stages batch across the whole stream.  ``run``:
    the caller's (kept open); without it, one made here and closed at the end."""
    size = max(1, min(SERIAL_SHARD_VIDEOS, commit_every))
    own = Run(store_path, device) if run is None else None
    try:
        with _bar(len(videos), progress) as bar:
            for o in process_stream(run or own, largest_first(videos), stages, missing_reason,
                                    parcel_videos=size):
                bar.update()
                bar.set_postfix_str(f"{o.status} {o.id}"[:40])
                yield o
    finally:
        if own is not None:
            own.close()


# ---- the cluster --------------------------------------------------------------------------
class _Starting:
    """An embedded cluster being started in a thread while the parent sets the store up."""

    def __init__(self, workers: int, gpus: int, visible: int):
        self._t0 = time.perf_counter()
        self._pool = ThreadPoolExecutor(1)
        self._future = self._pool.submit(local_cluster, workers, gpus=gpus, visible_gpus=visible)
        self.seconds = 0.0

    def get(self):
        try:
            cluster = self._future.result(timeout=START_TIMEOUT)
        except Exception as e:
            raise RunnerError(f"the dask cluster did not start: {' '.join(str(e).split())}") from None
        self.seconds = time.perf_counter() - self._t0
        return cluster

    def close(self) -> None:
        try:
            self._future.result(timeout=START_TIMEOUT).close()
        except Exception:
            pass
        self._pool.shutdown(wait=False)


def start_cluster(workers: int, *, device: str = "cpu", stages: Sequence[Stage] = ()) -> _Starting:
    """Start the embedded cluster in the background: on CUDA with a model stage, every worker
    gets a GPU (round-robin); otherwise CPU workers only."""
    pin_thread_reformatter()            # the caller's PyAV reformatter: not freed in a fork
    gpus = visible = 0
    if device.startswith("cuda") and any(s.uses_gpu for s in stages):
        import torch
        visible = max(1, torch.cuda.device_count())
        gpus = workers
    return _Starting(workers, gpus, visible)


# ---- worker side --------------------------------------------------------------------------
def worker_run(token: str, store_path: str, blob: bytes, device: str, threads: int) -> Run:
    """This dask worker's ``Run`` for run ``token``, with its stages (unpickled from ``blob``),
    made on the run's first task here and held by the worker (``dask_worker.l2l_run``) until
    another run comes, which closes it first: one run's models at a time."""
    from distributed import get_worker
    worker = get_worker()
    run = getattr(worker, "l2l_run", None)
    if run is None or run.token != token or run.closed:
        if run is not None:
            run.close()
        worker.l2l_run = None
        run = Run(store_path, device, cores=threads, token=token)
        run.stages = pickle.loads(blob)
        worker.l2l_run = run
    return run


def _set_threads(threads: int) -> None:
    """Torch threads per task: set now if torch is imported, else when it is (OpenMP reads
    ``OMP_NUM_THREADS`` at torch's import).  Torch is not imported for it."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        import torch
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _start_worker(token: str, store_path: str, blob: bytes, device: str, threads: int
                  ) -> tuple[str, float]:
    """On a worker, before any shard: make the run, unpickle the stages, import and set them
    up.  Returns ("", seconds) or (one line naming the cause, seconds)."""
    t = time.perf_counter()
    try:
        _set_threads(threads)
        run = worker_run(token, store_path, blob, device, threads)
        run.prepare(run.stages)              # models now; the rest while the first shard runs
    except BaseException as e:               # noqa: BLE001 - reported as one line
        return (" ".join(f"{type(e).__name__}: {e}".split()), time.perf_counter() - t)
    return ("", time.perf_counter() - t)


def _shard_task(store_path, videos, blob, device, missing_reason, threads, token, cores=None):
    """``cores``: what this shard may use (default ``threads``, the worker's share of its host);
    the run's last shards get the host's cores (``run_dask``)."""
    _set_threads(threads)
    run = worker_run(token, store_path, blob, device, threads)
    run.set_cores(cores or threads)
    return list(process_stream(run, videos, run.stages, missing_reason))


def _crash_outcomes(store_path: str, shard: list[VideoRecord], error: BaseException) -> list[Outcome]:
    out = []
    for v in shard:
        line = " ".join(f"{v.path or v.id}: worker error {type(error).__name__}: {error}".split())
        open_store(store_path).record_failure(
            Failure(id=v.id, stage="worker", reason=line, source=str(v.path or ""),
                    subset=v.subset, labels=tuple(v.labels)))
        out.append(Outcome(v.id, "failed", "worker", line))
    return out


def _start_all(client, token: str, store_path: str, blob: bytes, device: str, resources: dict
               ) -> tuple[dict, float, int]:
    """Run ``_start_worker`` on every worker (that can take the tasks) and wait, bounded.
    Returns (worker -> its share of its host's cores, the slowest start-up in seconds, the
    cores of the smallest host)."""
    from distributed import wait

    info = client.scheduler_info(n_workers=-1)["workers"]
    if not info:
        client.wait_for_workers(1, timeout=START_TIMEOUT)
        info = client.scheduler_info(n_workers=-1)["workers"]

    def able(info):
        return [a for a, w in info.items()
                if all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items())]

    addrs = able(info)
    # A worker that offers the resources may be starting, or restarting under its nanny after
    # a crash: wait for one, bounded, before saying there is none.
    deadline = time.monotonic() + RESOURCE_WAIT
    while not addrs and time.monotonic() < deadline:
        time.sleep(0.25)
        info = client.scheduler_info(n_workers=-1)["workers"]
        addrs = able(info)
    if not addrs:
        raise RunnerError(f"no worker offers {resources} (start GPU workers with "
                          "`dask worker ... --resources GPU=1`)")
    cores = client.run(os.cpu_count, workers=addrs)
    per_host: dict[str, int] = {}
    for a in addrs:
        per_host[info[a]["host"]] = per_host.get(info[a]["host"], 0) + max(1, int(info[a].get("nthreads", 1)))
    threads = {a: max(1, (cores.get(a) or 1) // per_host[info[a]["host"]]) for a in addrs}
    futs = {a: client.submit(_start_worker, token, store_path, blob, device, threads[a], workers=[a],
                             allow_other_workers=False, pure=False,
                             key=f"l2l-start-{uuid.uuid4().hex[:8]}-{a}")
            for a in addrs}
    done, not_done = wait(list(futs.values()), timeout=START_TIMEOUT)
    if not_done:
        raise RunnerError(f"{len(not_done)} dask worker(s) did not start the extraction within "
                          f"{START_TIMEOUT:.0f} s")
    slowest = 0.0
    for a, f in futs.items():
        if f.status == "error":
            raise RunnerError(f"worker {a} cannot start the extraction: "
                              f"{' '.join(str(f.exception()).split())}")
        line, seconds = f.result()
        if line:
            raise RunnerError(f"worker {a} cannot start the extraction: {line}")
        slowest = max(slowest, seconds)
    return threads, slowest, max(1, min(c or 1 for c in cores.values()))


def run_dask(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage], *,
             device: str, workers: int = 2, scheduler: str | None = None, cluster=None,
             progress: bool = True, missing_reason: str = "", retries: int = 2,
             gpu_batch: int = GPU_BATCH, model_resources: dict | None = None,
             timings: dict | None = None) -> Iterator[Outcome]:
    """Run shards of ``videos`` as dask tasks (see the module docstring); yields one
    ``Outcome`` per video as shards finish.  ``cluster``: an embedded cluster being started
    (``start_cluster``; closed by the caller); else one is started here, or ``scheduler`` is
    used.  ``model_resources``: what a shard with a model stage asks of its worker (default
    ``{"GPU": 1}`` on CUDA with an external scheduler; ``{}`` lets any worker take it)."""
    from distributed import Client, as_completed

    timings = {} if timings is None else timings
    t = time.perf_counter()
    own = None
    if scheduler is None and cluster is None:
        own = cluster = start_cluster(workers, device=device, stages=stages)
    try:
        if scheduler is None:
            c = cluster.get()
            timings["cluster_start"] = timings.get("cluster_start", 0.0) + cluster.seconds
            client = Client(c)
        else:
            client = Client(scheduler, timeout=START_TIMEOUT)
        try:
            needs_model = any(s.uses_gpu for s in stages)
            if model_resources is None:
                model_resources = {"GPU": 1} if (device.startswith("cuda") and scheduler) else {}
            resources = model_resources if needs_model else {}
            blob = pickle.dumps(list(stages))
            run = uuid.uuid4().hex[:8]
            w = time.perf_counter()
            threads, slowest, host = _start_all(client, run, store_path, blob, device, resources)
            timings["worker_start"] = timings.get("worker_start", 0.0) + time.perf_counter() - w
            timings["worker_setup_slowest"] = slowest
            n_workers = len(threads)
            size = max(1, min(SHARD_VIDEOS, math.ceil(len(videos) / (4 * n_workers))))
            shards = _shards(store_path, largest_first(videos), stages, size)
            # The last shards (one per worker) end the run while workers fall idle one by one:
            # their decodes take every core of the host as FFmpeg threads (a thread count never
            # changes a number), so the last, lone video does not decode on one core of two.
            share = min(threads.values())
            tail = len(shards) - n_workers
            futures = [client.submit(_shard_task, store_path, sh, blob, device, missing_reason,
                                     share, run, host if i >= tail else share,
                                     key=f"l2l-shard-{run}-{i}",
                                     retries=retries, pure=False,
                                     resources=resources or None)
                       for i, sh in enumerate(shards)]
            by_key = {f.key: sh for f, sh in zip(futures, shards)}
            with _bar(len(videos), progress) as bar:
                for fut, result in as_completed(futures, with_results=True, raise_errors=False):
                    shard = by_key.pop(fut.key)
                    fut.release()
                    outs = result if isinstance(result, list) else \
                        _crash_outcomes(store_path, shard, result)
                    for o in outs:
                        bar.update()
                        bar.set_postfix_str(f"{o.status} {o.id}"[:40])
                        yield o
        finally:
            client.close()
    finally:
        if own is not None:
            own.close()
        timings["dask_total"] = timings.get("dask_total", 0.0) + time.perf_counter() - t

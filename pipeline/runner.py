"""Where the per-video work runs: in this process, or as dask.distributed tasks.

``run_serial`` runs ``process_video`` here, one video after another.  ``run_dask`` runs it as
dask tasks on an embedded single-machine cluster (``local_cluster``: ``workers`` processes, one
thread each) or on an existing cluster (``scheduler``: the address of a ``dask scheduler`` whose
``dask worker``s, on any number of machines, see the store at the same path).

How the work is cut:

- CPU stages only (decode, spectrogram): one task per video, on any worker.
- With a model stage (teacher, features) on CUDA: a *decode task* per video (CPU stages, any
  worker) and *model tasks* of ``gpu_batch`` videos each that ask for the ``GPU`` resource, so
  they run only on workers started with ``--resources GPU=1``.  The decode tasks' parcels are
  committed as each batch fills (a cheap, locked, atomic step), after which a model task reads
  its videos' ``frames``/``logmel`` from the store.  Many CPU workers thus decode ahead while
  the GPU worker keeps the model loaded and goes from one batch to the next without waiting for
  a decode; dask queues the next model task while the current one runs.

Every task writes its own arrays to the store (``Store.put``: a parcel under a fresh name,
renamed into place whole), so no feature array travels through the scheduler and concurrent
writers never touch the same file; only small ``Outcome`` records come back.  ``extract``
commits the parcels into the readable layout (periodically and at the end).

Failures: a video that fails to decode returns a failure ``Outcome`` (recorded in the store) and
is not retried; a task that raises, or whose worker dies, is retried (``retries``, and dask's
``allowed-failures`` for dead workers); one that still fails is recorded as a ``worker``
failure.  A task that ran twice (its worker died after ``put``) leaves two parcels of the same
video; commit keeps the later one only.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterator, Sequence

from tqdm import tqdm

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..store import Failure, open_store
from .extract import Outcome, process_video

GPU_BATCH = 8                # videos per model task (each video's moments go through in chunks)


def _bar(total: int, progress: bool):
    return tqdm(total=total, unit="video", disable=not progress, dynamic_ncols=True,
                desc="extract")


def run_serial(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage], *,
               device: str, progress: bool = True, missing_reason: str = "", **_) -> Iterator[Outcome]:
    with _bar(len(videos), progress) as bar:
        for v in videos:
            o = process_video(store_path, v, stages, device, missing_reason)
            bar.update()
            bar.set_postfix_str(f"{o.status} {o.id}"[:40])
            yield o


# ---- the cluster --------------------------------------------------------------------------
def local_cluster(workers: int = 2, *, gpus: int = 0, silence_logs: int = 40):
    """An embedded single-machine cluster: ``workers`` worker processes with one thread each;
    the first ``gpus`` of them declare ``GPU=1`` and see only their own GPU
    (``CUDA_VISIBLE_DEVICES``).  Each worker is kept alive by a nanny, which restarts it if it
    dies.  Close it with ``.close()`` (or use it as a context manager)."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = max(1, int(workers))
    spec = {}
    for i in range(workers):
        opts = {"nthreads": 1, "memory_limit": "auto" if workers == 1 else 0,
                "silence_logs": silence_logs}
        if i < gpus:
            opts["resources"] = {"GPU": 1}
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(i)}
        spec[f"l2l-{'gpu' if i < gpus else 'cpu'}-{i}"] = {"cls": Nanny, "options": opts}
    scheduler = {"cls": Scheduler, "options": {"dashboard": False, "host": "127.0.0.1"}}
    return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=silence_logs,
                       name="l2l-extract")


def _threads_by_host(client) -> dict[str, int]:
    """Torch threads per task: a host's cores (as its workers report) over the tasks its
    workers run at once (their threads), so that tasks x torch threads never oversubscribe a
    machine."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    per_host = Counter()
    for w in info.values():
        per_host[w["host"]] += max(1, int(w.get("nthreads", 1)))
    cores = client.run(os.cpu_count)                         # address -> that host's cores
    out = {}
    for addr, w in info.items():
        out[w["host"]] = max(1, (cores.get(addr) or 1) // per_host[w["host"]])
    return out


def _set_threads(threads_by_host: dict[str, int]) -> None:
    import torch
    from distributed import get_worker
    try:
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except ValueError:                                        # not in a worker (tests)
        return
    n = threads_by_host.get(host, 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# ---- tasks --------------------------------------------------------------------------------
def _video_task(store_path, video, stages, device, missing_reason, threads_by_host):
    _set_threads(threads_by_host)
    return process_video(store_path, video, stages, device, missing_reason)


def _model_task(store_path, videos, stages, device, missing_reason, threads_by_host):
    """Run every stage left to do for a batch of videos whose decode tasks have committed: the
    CPU stages are cached, so only the model stages run, on inputs read from the store, with
    the model loaded once per worker process."""
    _set_threads(threads_by_host)
    return [process_video(store_path, v, stages, device, missing_reason) for v in videos]


def _crash_outcome(store_path: str, v: VideoRecord, error: BaseException) -> Outcome:
    line = " ".join(f"{v.path or v.id}: worker error {type(error).__name__}: {error}".split())
    open_store(store_path).record_failure(
        Failure(id=v.id, stage="worker", reason=line, source=str(v.path or "")))
    return Outcome(v.id, "failed", "worker", line)


def run_dask(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage], *,
             device: str, workers: int = 2, scheduler: str | None = None, progress: bool = True,
             missing_reason: str = "", retries: int = 2, gpu_batch: int = GPU_BATCH,
             model_resources: dict | None = None) -> Iterator[Outcome]:
    """Run ``process_video`` over ``videos`` as dask tasks (see the module docstring); yields
    one ``Outcome`` per video as they finish.  ``model_resources``: what a model task asks of
    its worker (default ``{"GPU": 1}`` on CUDA; ``{}`` runs model stages inside the per-video
    tasks, on any worker)."""
    from distributed import Client

    needs_model = any(s.uses_gpu for s in stages)
    cuda = device.startswith("cuda")
    if model_resources is None:
        model_resources = {"GPU": 1} if cuda else {}
    split = needs_model and bool(model_resources)
    cluster = None
    if scheduler is None:
        gpus = 0
        if cuda and needs_model:
            import torch
            gpus = min(max(1, torch.cuda.device_count()), max(1, workers))
        cluster = local_cluster(workers, gpus=gpus)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        threads = _threads_by_host(client)
        if split:
            yield from _run_split(client, store_path, videos, stages, device=device,
                                  progress=progress, missing_reason=missing_reason,
                                  retries=retries, gpu_batch=gpu_batch,
                                  resources=model_resources, threads=threads)
        else:
            yield from _run_per_video(client, store_path, videos, stages, device=device,
                                      progress=progress, missing_reason=missing_reason,
                                      retries=retries, threads=threads)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_per_video(client, store_path, videos, stages, *, device, progress, missing_reason,
                   retries, threads) -> Iterator[Outcome]:
    from distributed import as_completed

    futures = [client.submit(_video_task, store_path, v, stages, device, missing_reason, threads,
                             key=f"l2l-{i}-{v.id}", retries=retries, pure=False)
               for i, v in enumerate(videos)]
    by_key = {f.key: v for f, v in zip(futures, videos)}
    with _bar(len(videos), progress) as bar:
        for fut, result in as_completed(futures, with_results=True, raise_errors=False):
            o = result if isinstance(result, Outcome) else _crash_outcome(store_path, by_key[fut.key], result)
            fut.release()
            bar.update()
            bar.set_postfix_str(f"{o.status} {o.id}"[:40])
            yield o


def _run_split(client, store_path, videos, stages, *, device, progress, missing_reason, retries,
               gpu_batch, resources, threads) -> Iterator[Outcome]:
    """Decode tasks on any worker; model tasks of ``gpu_batch`` decoded videos on GPU workers."""
    from distributed import as_completed

    cpu_stages = [s for s in stages if not s.uses_gpu]
    decode = [client.submit(_video_task, store_path, v, cpu_stages, "cpu", missing_reason,
                            threads, key=f"l2l-decode-{i}-{v.id}", retries=retries, pure=False)
              for i, v in enumerate(videos)]
    by_key = {f.key: v for f, v in zip(decode, videos)}
    store = open_store(store_path)
    ready: list[VideoRecord] = []
    pending_decodes = len(decode)
    seq = 0
    ac = as_completed(decode, with_results=True, raise_errors=False)

    def submit_batch(batch):
        nonlocal seq
        store.commit()                     # the model tasks read their inputs from the store
        fut = client.submit(_model_task, store_path, batch, stages, device, missing_reason,
                            threads, key=f"l2l-model-{seq}", retries=retries, pure=False,
                            resources=resources)
        by_key[fut.key] = batch
        seq += 1
        ac.add(fut)

    with _bar(len(videos), progress) as bar:
        for fut, result in ac:
            batch = by_key.pop(fut.key)
            fut.release()
            if isinstance(batch, list):                                   # a model task
                outs = result if isinstance(result, list) else \
                    [_crash_outcome(store_path, v, result) for v in batch]
                for o in outs:
                    bar.update()
                    yield o
                continue
            pending_decodes -= 1
            o = result if isinstance(result, Outcome) else _crash_outcome(store_path, batch, result)
            if o.status == "failed":
                bar.update()
                yield o
            else:
                ready.append(batch)
            if ready and (len(ready) >= gpu_batch or pending_decodes == 0):
                submit_batch(ready)
                ready = []

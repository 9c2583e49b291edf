"""Where the per-video work runs: in this process, or as dask tasks (one video per task).

Both runners yield ``Outcome``s as videos finish and show a progress bar with a count and an
ETA.  Workers write to the store themselves; only small ``Outcome`` records travel back.
"""
from __future__ import annotations

from typing import Iterator, Sequence

from tqdm import tqdm

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..store import Failure, open_store
from .extract import Outcome, process_video, torch_threads_for

GPU_STAGES = ("teacher", "features")


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


def _worker_task(store_path, video, stages, device, missing_reason, threads):
    import torch
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return process_video(store_path, video, stages, device, missing_reason)


def run_dask(store_path: str, videos: Sequence[VideoRecord], stages: Sequence[Stage], *,
             device: str, workers: int = 2, scheduler: str | None = None, progress: bool = True,
             missing_reason: str = "", retries: int = 2) -> Iterator[Outcome]:
    """One task per video on an embedded ``LocalCluster`` (``workers`` processes) or on the
    cluster at ``scheduler``.  Tasks that need a GPU ask for the ``GPU`` resource, so they run
    only on workers started with ``--resources GPU=1``.  A worker that dies mid-task has its task
    retried (``retries``); a video that fails to decode is recorded, not retried (process_video
    returns a failure instead of raising)."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40,
                               resources={"GPU": 1} if device.startswith("cuda") else None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        threads = torch_threads_for(n_workers) if scheduler is None else 1
        needs_gpu = device.startswith("cuda") and any(s.name in GPU_STAGES for s in stages)
        resources = {"GPU": 1} if needs_gpu else None
        futures = [client.submit(_worker_task, store_path, v, stages, device, missing_reason,
                                 threads, key=f"l2l-{i}-{v.id}", retries=retries,
                                 resources=resources, pure=False)
                   for i, v in enumerate(videos)]
        by_key = {f.key: v for f, v in zip(futures, videos)}
        with _bar(len(videos), progress) as bar:
            for fut, result in as_completed(futures, with_results=True, raise_errors=False):
                if isinstance(result, Outcome):
                    o = result
                else:                     # the task itself crashed, even after retries
                    v = by_key[fut.key]
                    line = " ".join(f"{v.path or v.id}: worker error {type(result).__name__}: "
                                    f"{result}".split())
                    o = Outcome(v.id, "failed", "worker", line)
                    open_store(store_path).record_failure(
                        Failure(id=v.id, stage="worker", reason=line, source=str(v.path or "")))
                bar.update()
                yield o
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

"""The embedded dask cluster of ``l2l extract --workers N`` (``local_cluster``): N worker
processes, one thread each, forked from this process on the CPU, and the settings that keep dask's
own work out of their way (``QUIET_CLUSTER``) and a fork from hanging on what this process left
behind (``collect_before_fork``, ``core.media.pin_thread_reformatter``).
Not here: starting it in the background, the shards and their tasks (``runner.py``).
"""
from __future__ import annotations

import functools
import gc
import os
from types import MappingProxyType

from ..core.media import pin_thread_reformatter

__all__ = ["QUIET_CLUSTER", "collect_before_fork", "local_cluster"]


QUIET_CLUSTER = MappingProxyType({
    # a shard goes to a worker only when it has a free thread, in the order submitted (largest
    # first): none waits queued on a busy worker while another is idle
    "distributed.scheduler.worker-saturation": 1.0,
    # dask's statistical profiler samples every worker thread's stack each 10 ms; a shard is one
    # long task, so it learns nothing, and it cost 6.5 of 124 CPU seconds (and the decode thread
    # the GIL) on the realistic set of bench_cli; the event-loop tick (20 ms) and system monitor
    # (500 ms) another 3 s.  Off / slowed: 65.3 -> 60.0 s wall for the same run.
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
})


@functools.cache
def collect_before_fork() -> None:
    """From now on, every fork of this process (a worker started, or restarted by its nanny)
    first collects the garbage here.  A PyAV object left in a reference cycle (an encoder's
    codec context, say) holds a libswscale context with worker threads; freed in a forked
    child, where those threads do not exist, it waits for them for ever (the whole suite on
    Python 3.12 with PyAV 19 hung so in a worker's start-up)."""
    os.register_at_fork(before=gc.collect)


def local_cluster(workers: int = 2, *, gpus: int = 0, visible_gpus: int | None = None,
                  silence_logs: int = 40, fork: bool | None = None):
    """An embedded single-machine cluster: ``workers`` worker processes with one thread each;
    the first ``gpus`` of them declare ``GPU=1`` and see one GPU each (``CUDA_VISIBLE_DEVICES``,
    round-robin over ``visible_gpus``, default ``gpus``).  Each worker is kept alive by a nanny,
    which restarts it if it dies.  Close it with ``.close()`` (or use it as a context manager).

    ``fork`` (default: when no worker has a GPU): worker processes are forked from this one, so
    they start in a fraction of a second with every module already imported here, instead of a
    fresh interpreter importing dask, PyAV, zarr and l2l again (seconds each).  This process must
    not have run torch's OpenMP work before (a forked child would hang in its first parallel
    region); ``extract`` runs no stage in the parent when it uses a cluster."""
    import dask
    from distributed import Nanny, Scheduler, SpecCluster

    workers = max(1, int(workers))
    visible = max(1, visible_gpus or gpus or 1)
    spec = {}
    for i in range(workers):
        opts = {"nthreads": 1, "memory_limit": "auto" if workers == 1 else 0,
                "silence_logs": silence_logs,
                "config": dict(QUIET_CLUSTER)}   # its own: restarted workers get it too
        if i < gpus:
            opts["resources"] = {"GPU": 1}
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(i % visible)}
        spec[f"l2l-{'gpu' if i < gpus else 'cpu'}-{i}"] = {"cls": Nanny, "options": opts}
    scheduler = {"cls": Scheduler, "options": {"dashboard": False, "dashboard_address": ":0",
                                               "host": "127.0.0.1"}}
    fork = (gpus == 0) if fork is None else fork
    if fork:
        collect_before_fork()
        pin_thread_reformatter()        # (this thread's; ``start_cluster`` pins the caller's)
    with dask.config.set({**QUIET_CLUSTER,
                          "distributed.worker.multiprocessing-method": "fork" if fork else "spawn"}):
        return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=silence_logs,
                           name="l2l-extract")

"""The one owner of what an extraction run sets up in a process: ``Run``.

A ``Run`` holds, for one run in one process, its stages' set-ups and the models they loaded
(``ensure_setup``, ``prepare``: a model loads once per run and process, not per shard or video),
its store object (``store``: the index is parsed again only after a commit replaced it), its
named thread pools (``pool``: "setup", and "decode": the decode slots of ``work.py``'s decode
step) and the cores it may use (``cores``, ``decode_slots``, ``with_threads``).  The step
threads of a stream (``work.process_stream``) are started and joined by the stream itself.
It is made by whoever starts the run (``extract``; on a dask worker, ``runner.worker_run``:
one per worker, the previous run's closed first), passed down explicitly, and ``close``d when the run ends, which shuts its threads down
and drops its models.  No module-level cache outlives it.

Not here: what a shard does (``work.py``), where shards run (``runner.py``).
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from ..stages import Stage
from ..stages.model import ModelStage
from ..store import open_store

MAX_DECODES = 4              # videos one process decodes at once, at most (memory: one output each)


def stage_device(stage: Stage, device: str) -> str:
    """Model stages run on the resolved device; every other stage on the CPU."""
    return device if stage.uses_gpu else "cpu"


class Run:
    """What one run set up in this process (see the module docstring).  ``store_path``: the
    store it writes; ``device``: the resolved device of its model stages; ``cores``: the cores
    it may use (default: this process's CPU affinity).  Use as a context manager, or call
    ``close``."""

    def __init__(self, store_path, device: str = "cpu", *, cores: int | None = None,
                 token: str | None = None):
        self.store_path, self.device, self.token = str(store_path), device, token
        self._cores = cores
        self._store = None
        self.models: dict[tuple, Any] = {}       # (stage, config hash, device) -> loaded model
        self._ready: dict[int, Stage] = {}       # id(stage) -> stage, set up (held: ids stay unique)
        self._pending: dict[int, Future] = {}    # set-ups running in the "setup" thread
        self._pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}
        self._copies: dict[tuple[int, int], tuple[Stage, Stage]] = {}
        self.closed = False

    # ---- the store ----------------------------------------------------------------------------
    @property
    def store(self):
        """This run's store object (opened on first use)."""
        if self._store is None:
            self._store = open_store(self.store_path)
        return self._store

    # ---- cores and threads --------------------------------------------------------------------
    def cores(self) -> int:
        """The cores this run may use here: the runner's share, else the CPU affinity."""
        mine = len(os.sched_getaffinity(0))
        return max(1, min(self._cores or mine, mine))

    def set_cores(self, cores: int | None) -> None:
        """The cores this run may use here from now on (the runner's share for the next shard;
        None: the CPU affinity)."""
        self._cores = cores

    def decode_slots(self) -> int:
        """Videos decoded at once: the cores, at most ``MAX_DECODES``."""
        return min(self.cores(), MAX_DECODES)

    def pool(self, name: str, threads: int = 1) -> ThreadPoolExecutor:
        """This run's ``l2l-<name>`` pool of ``threads`` threads (another size: a new pool; the
        old one is shut down once its work is done)."""
        got = self._pools.get(name)
        if got is None or got[0] != threads:
            if got is not None:
                got[1].shutdown(wait=False)
            got = self._pools[name] = (threads, ThreadPoolExecutor(threads, thread_name_prefix=f"l2l-{name}"))
        return got[1]

    def with_threads(self, stage: Stage, slots: int) -> Stage:
        """``stage`` with the run's cores shared among ``slots`` decodes as decoder threads, if
        it has a ``threads`` option left to FFmpeg (0) that is not part of its cache key; else
        ``stage`` itself.  (FFmpeg's own choice, cores + 1 threads per decode, oversubscribes a
        worker that has one core: 6.9 s against 6.4 s for 6 x 180 s with 2 workers on 2 cores.)"""
        if getattr(stage.config, "threads", None) != 0 or "threads" not in stage.hash_exclude:
            return stage
        n = max(1, self.cores() // max(1, slots))
        key = (id(stage), n)
        got = self._copies.get(key)
        if got is None or got[0] is not stage:
            copy = type(stage)(dataclasses.replace(stage.config, threads=n))
            copy.config_dict = stage.config_dict     # provenance: the config as asked (same key)
            got = self._copies[key] = (stage, copy)
        return got[1]

    # ---- stage set-up -------------------------------------------------------------------------
    def ensure_setup(self, stage: Stage) -> None:
        """``stage.setup`` once per run and stage object (a model stage's model from this run's
        ``models``: loaded once, whichever of its stage objects asks).  Waits for a set-up
        ``prepare`` started in the background (and raises its error, if any)."""
        pending = self._pending.pop(id(stage), None)
        if pending is not None:
            pending.result()
        if id(stage) not in self._ready:
            self._setup_now(stage)

    def _setup_now(self, stage: Stage) -> None:
        device = stage_device(stage, self.device)
        if isinstance(stage, ModelStage):         # its model comes from (or goes into) the run's
            stage.setup(device, models=self.models)
        else:
            stage.setup(device)
        self._ready[id(stage)] = stage

    def prepare(self, stages: Sequence[Stage]) -> None:
        """Set the stages up: model stages now (a missing weights file stops the run before any
        work), the others in the "setup" thread, so that their set-up (the spectrogram's filter
        bank; torch, for a non-default geometry) overlaps the first decode instead of delaying
        it."""
        for stage in stages:
            if stage.uses_gpu:
                self.ensure_setup(stage)
        for stage in stages:
            if not stage.uses_gpu and id(stage) not in self._ready and id(stage) not in self._pending:
                self._pending[id(stage)] = self.pool("setup").submit(self._setup_now, stage)

    # ---- the end ------------------------------------------------------------------------------
    def close(self) -> None:
        """End the run here: its threads finish their work and stop, its stages let their
        models go, its store object is dropped."""
        if self.closed:
            return
        self.closed = True
        for _, pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        self._pending.clear()
        for stage in self._ready.values():
            stage.release()
        self._ready.clear()
        self._copies.clear()
        self.models.clear()
        self._store = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""What one extraction process keeps for the whole run: its stages, each set up once
(``ensure_setup``, ``prepare``: a model loads once per worker, not per shard or video), its store
object (``store_for``: the index is parsed again only after a commit replaced it), and its named
helper threads (``named_thread``: "setup", "stages", "read", "decode"; a forked worker gets
its own).

Not here: what a shard does (``work.py``), where shards run (``runner.py``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..stages import Stage
from ..store import open_store


_SETUP: dict[tuple[int, str, str], Stage] = {}


def stage_device(stage: Stage, device: str) -> str:
    """Model stages run on the resolved device; every other stage on the CPU."""
    return device if stage.uses_gpu else "cpu"


def ensure_setup(stage: Stage, device: str) -> None:
    """``stage.setup`` once per process and stage object (the runner keeps one object per
    stage per process, so a model is loaded once per worker, not per video).  Waits for a
    set-up ``prepare`` started in the background (and raises its error, if any)."""
    key = (id(stage), stage.config_hash, stage_device(stage, device))
    pending = _PENDING.pop(key, None)
    if pending is not None:
        pending.result()
    if key not in _SETUP:
        _setup_now(stage, device, key)


def _setup_now(stage: Stage, device: str, key: tuple) -> None:
    stage.setup(stage_device(stage, device))
    _SETUP[key] = stage                      # (holding it keeps its id from being reused)


_PENDING: dict[tuple, Any] = {}
_PENDING_PID: list[int] = []


def prepare(stages: Sequence[Stage], device: str) -> None:
    """Set the stages up: model stages now (a missing weights file stops the run before any
    work), the others in a background thread, so that their set-up (the spectrogram's filter
    bank; torch, for a non-default geometry) overlaps the first decode instead of delaying it."""
    for stage in stages:
        if stage.uses_gpu:
            ensure_setup(stage, device)
    if _PENDING_PID != [os.getpid()]:           # a forked worker has none of our set-ups running
        _PENDING_PID[:] = [os.getpid()]
        _PENDING.clear()
    for stage in stages:
        key = (id(stage), stage.config_hash, stage_device(stage, device))
        if not stage.uses_gpu and key not in _SETUP and key not in _PENDING:
            _PENDING[key] = named_thread("setup").submit(_setup_now, stage, device, key)


_STORES: dict[str, Any] = {}


def store_for(store_path: str):
    """This process's store object for ``store_path``: its index is parsed again only after a
    commit replaced it, not once per shard or video."""
    st = _STORES.get(store_path)
    if st is None:
        st = _STORES[store_path] = open_store(store_path)
    return st


_THREADS: dict[str, tuple] = {}


def named_thread(name: str, threads: int = 1):
    """This process's ``l2l-<name>`` pool of ``threads`` threads, as an executor (a forked
    worker gets its own; asking for another size makes a new pool)."""
    from concurrent.futures import ThreadPoolExecutor
    got = _THREADS.get(name)
    if got is None or got[:2] != (os.getpid(), threads):
        got = _THREADS[name] = (os.getpid(), threads,
                                ThreadPoolExecutor(threads, thread_name_prefix=f"l2l-{name}"))
    return got[2]

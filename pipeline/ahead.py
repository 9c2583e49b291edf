"""Decode-ahead: several videos of a shard decoded at once in one process.

PyAV releases the GIL while FFmpeg decodes, so a process with two cores decodes two videos at
once, one decoder thread each; on 180 s 320x240 H.264 that finishes 1.6x sooner than decoding
them one after the other with FFmpeg's own threading.  ``process_shard`` asks ``decode_slots``
how many, ``with_threads`` for the stage copy that shares the cores among them as decoder
threads, and ``ahead`` for the started videos, in order.  Memory: one decoded output per slot.

Not here: what a shard does with a decoded video (``work.py``).
"""
from __future__ import annotations

import dataclasses
import os
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from ..stages import Stage
from .process import named_thread

MAX_DECODES = 4              # videos one process decodes at once, at most (memory: one output each)

_CORES: list[int] = []       # the cores this process may use, as the runner set them
_COPIES: dict[tuple[int, int], tuple[Stage, Stage]] = {}


def set_cores(n: int) -> None:
    """The cores this process may use (the runner's share of the machine for one worker)."""
    _CORES[:] = [max(1, int(n))]


def cores() -> int:
    """The cores this process may use: the runner's share, else its CPU affinity."""
    mine = len(os.sched_getaffinity(0))
    return max(1, min(_CORES[0] if _CORES else mine, mine))


def decode_slots() -> int:
    """Videos decoded at once in this process: its cores (the runner's share, else its CPU
    affinity), at most ``MAX_DECODES``."""
    return min(cores(), MAX_DECODES)


def with_threads(stage: Stage, slots: int) -> Stage:
    """``stage`` with this process's cores shared among ``slots`` decodes as decoder threads, if
    it has a ``threads`` option left to FFmpeg (0) that is not part of its cache key; else
    ``stage`` itself.  (FFmpeg's own choice, cores + 1 threads per decode, oversubscribes a
    worker that has one core: 6.9 s against 6.4 s for 6 x 180 s with 2 workers on 2 cores.)"""
    if getattr(stage.config, "threads", None) != 0 or "threads" not in stage.hash_exclude:
        return stage
    n = max(1, cores() // max(1, slots))
    key = (id(stage), n)
    got = _COPIES.get(key)
    if got is None or got[0] is not stage:
        copy = type(stage)(dataclasses.replace(stage.config, threads=n))
        copy.config_dict = stage.config_dict     # provenance: the config as asked (same key)
        got = _COPIES[key] = (stage, copy)
    return got[1]


def ahead(start: Callable[[Any], Any], jobs: Sequence[Any], slots: int) -> Iterator[tuple[Any, Any]]:
    """``(job, start(job))`` for each job, in order, with up to ``slots`` jobs started at once in
    this process's decode threads (so at most ``slots`` outputs are held)."""
    if slots <= 1:
        for job in jobs:
            yield job, start(job)
        return
    pool, window, todo = named_thread("decode", slots), deque(), iter(jobs)
    for job in todo:
        window.append((job, pool.submit(start, job)))
        if len(window) >= slots:
            break
    while window:
        job, fut = window.popleft()
        result = fut.result()
        nxt = next(todo, None)
        if nxt is not None:
            window.append((nxt, pool.submit(start, nxt)))
        yield job, result

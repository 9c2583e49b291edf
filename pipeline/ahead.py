"""Decode-ahead: several videos of a shard decoded at once in one process.

PyAV releases the GIL while FFmpeg decodes, so a process with two cores decodes two videos at
once, one decoder thread each; on 180 s 320x240 H.264 that finishes 1.6x sooner than decoding
them one after the other with FFmpeg's own threading.  ``process_stream`` asks its run
(``process.Run``) how many (``decode_slots``), for the stage copy that shares the cores among
them as decoder threads (``with_threads``) and for the pool, and ``ahead`` for the started
videos, in order.  Memory: one decoded output per slot.

Not here: what a shard does with a decoded video (``work.py``); the run's threads (``process.py``).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator, Sequence


def ahead(start: Callable[[Any], Any], jobs: Sequence[Any], slots: int, pool=None
          ) -> Iterator[tuple[Any, Any]]:
    """``(job, start(job))`` for each job, in order, with up to ``slots`` jobs started at once in
    ``pool`` (an executor of ``slots`` threads; so at most ``slots`` outputs are held)."""
    if slots <= 1 or pool is None:
        for job in jobs:
            yield job, start(job)
        return
    window, todo = deque(), iter(jobs)
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

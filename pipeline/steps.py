"""The threads of one extraction stream and the bounded queues that join them.

``Steps`` runs each step of ``work.process_stream`` (decode, compute, read, model, write) as one
thread, ``l2l-<step>`` (in a copy of the caller's context variables), that owns its state and
talks to the others only through ``Pipe``s: bounded ``queue.Queue``s holding one item at most.  With ``handoff`` (the big items: decoded
videos, groups, parcels), a ``put`` also waits until the next step has taken the item, so a step
holds at most the item it works on and the one it hands over.  A slow step therefore holds up
the ones before it (a slow writer stops decode) and memory stays bounded, whatever the speeds.

Ending.  A step that raises (an error no video owns: the store cannot be written) has its error
kept (the first one) and ``stop`` set; every step blocked on a pipe sees it within ``POLL``
seconds and ends, and so does the consumer's ``get``, with ``Stopped``.  ``close`` (the caller's
``finally``: the end, an error, a ``KeyboardInterrupt``, a generator abandoned midway) sets
``stop`` and joins every thread, so none outlives the stream; a step busy in a stage finishes
that call first.  A step also stops when the main thread has ended (the interpreter exiting with
a stream nobody closed), so that the interpreter's own join of the threads cannot hang.

Not here: what the steps do (``work.py``).
"""
from __future__ import annotations

import contextvars
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

POLL = 0.05          # seconds a blocked step waits between looks at ``stop``
END = object()       # the last item through a pipe: the step before it is done


class Stopped(Exception):
    """The stream is stopping (a step failed, or its caller closed it)."""


class Pipe:
    """A bounded queue from one step to the next (see the module docstring)."""

    def __init__(self, steps: "Steps", handoff: bool = False):
        self._steps = steps
        self._items: queue.Queue = queue.Queue(maxsize=1)
        self._taken: queue.Queue | None = queue.Queue(maxsize=1) if handoff else None

    def put(self, item: Any) -> None:
        self._steps.wait(self._items.put, item)
        if self._taken is not None:
            self._steps.wait(self._taken.get)          # the next step has it

    def get(self) -> Any:
        item = self._steps.wait(self._items.get)
        if self._taken is not None:
            self._taken.put_nowait(True)               # (one item at a time: never full)
        return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.get()
            if item is END:
                return
            yield item


class Steps:
    """The threads of one stream: ``pipe`` makes the queues, ``start`` a step, ``close`` stops
    and joins them all; ``error`` is the first error a step raised."""

    def __init__(self):
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def pipe(self, handoff: bool = False) -> Pipe:
        return Pipe(self, handoff)

    def wait(self, op: Callable, *args: Any) -> Any:
        """``op(*args, timeout=POLL)`` (a queue's ``put`` or ``get``) until it succeeds;
        ``Stopped`` once the stream stops (checked first: a stopping stream starts no work)."""
        while True:
            if self.stop.is_set():
                raise Stopped()
            try:
                return op(*args, timeout=POLL)
            except (queue.Full, queue.Empty):
                if not threading.main_thread().is_alive():
                    self.stop.set()

    def start(self, name: str, step: Callable[[Iterable, Callable[[Any], None]], None],
              inbox: Iterable, outbox: Pipe) -> None:
        """Run ``step(inbox, outbox.put)`` in thread ``l2l-<name>``, then put ``END``."""
        def main() -> None:
            try:
                step(inbox, outbox.put)
                outbox.put(END)
            except Stopped:
                pass
            except BaseException as e:                 # noqa: BLE001 - handed to the caller
                with self._lock:
                    if self.error is None:
                        self.error = e
                self.stop.set()
        # (in a copy of the caller's context: what a stage may ask of it, e.g. dask's
        # ``get_worker``, answers as it would in the caller's thread)
        t = threading.Thread(target=contextvars.copy_context().run, args=(main,),
                             name=f"l2l-{name}")
        self.threads.append(t)
        t.start()

    def close(self) -> None:
        """Stop every step and wait for its thread to end."""
        self.stop.set()
        for t in self.threads:
            t.join()

    def failed(self) -> BaseException:
        """What stopped the stream (after ``close``): the step's error, else ``Stopped``."""
        return self.error if self.error is not None else Stopped("the stream was stopped")

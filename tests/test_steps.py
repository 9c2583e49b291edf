"""``process_stream`` as steps joined by bounded queues (issue 21): a slow writer holds decode
back, a store that cannot be written stops every step and is raised, a generator abandoned
midway leaves no thread behind, and the outcomes come in input order with failures from every
step interleaved.  Stand-in stages (no media decoding) over small files, into a real store."""
from __future__ import annotations

import _thread
import dataclasses
import gc
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest

from l2l.datasets.base import VideoRecord
from l2l.pipeline.process import Run
from l2l.pipeline.steps import Pipe, Steps, Stopped
from l2l.pipeline.work import process_stream
from l2l.stages import Stage
from l2l.stages.decode import DecodeError
from l2l.store import StoreWriteError, create_store, open_store

STEPS = {"l2l-decode", "l2l-compute", "l2l-read", "l2l-model", "l2l-write"}


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    moments: int = 3
    fail: tuple = ()          # video numbers that fail in this stage
    tag: int = 0


class FakeDecode(Stage):
    """Reads the source: ``x`` = the video's number (from its file name), ``moments`` rows, and
    a transient ``w`` (as decode's audio windows), whose life ``refs`` follows."""
    name, Config, inputs, outputs, transient = "decode", FakeConfig, ("source",), ("times", "x", "w"), ("w",)

    def __init__(self, config=None):
        super().__init__(config)
        self.started: list[int] = []
        self.refs: dict[int, weakref.ref] = {}

    def run(self, inputs, *, source=None, device="cpu"):
        k = int(Path(source).stem[1:])
        self.started.append(k)
        if k in self.config.fail:
            raise DecodeError(source, "cannot be decoded (test)")
        n = self.config.moments
        w = np.zeros((n, 64), np.float32)
        self.refs[k] = weakref.ref(w)
        return {"times": np.arange(n, dtype=np.float64), "x": np.full((n, 2), k, np.float32),
                "w": w, "duration": float(n), "fps": 1.0, "has_audio": False}


class FakeSpec(Stage):
    """A per-video CPU stage after decode (where the spectrogram runs)."""
    name, Config, inputs, outputs = "spectrogram", FakeConfig, ("x", "w"), ("y",)

    def run(self, inputs, *, source=None, device="cpu"):
        if int(inputs["x"][0, 0]) in self.config.fail:
            raise ValueError("bad spectrum (test)")
        return {"y": inputs["x"] + 0.5}


class FakeModel(Stage):
    """A batchable stage; a batch holding a failing video fails as a whole (the stream then
    finds the culprit video by video)."""
    name, Config, inputs, outputs, batchable = "features", FakeConfig, ("y",), ("z",), True

    def run(self, inputs, *, source=None, device="cpu"):
        return self.run_batch([inputs], device=device)[0]

    def run_batch(self, inputs, *, device="cpu"):
        if any(int(x["y"][0, 0]) in self.config.fail for x in inputs):
            raise RuntimeError("model failed (test)")
        return [{"z": x["y"] * 2 + self.config.tag} for x in inputs]


def _videos(tmp_path, n, missing=()):
    out = []
    for k in range(n):
        p = tmp_path / "media" / f"v{k:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([k]) * 16)
        out.append(VideoRecord(f"v{k:02d}", None if k in missing else p, ("a",), "training"))
    return out


def _step_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in STEPS}


def _run_threads() -> list[str]:
    """Threads of a stream or a run (not the store's process-wide chunk readers)."""
    return [t.name for t in threading.enumerate()
            if t.name in STEPS or t.name.startswith(("l2l-decode", "l2l-setup", "l2l-stages"))]


@pytest.fixture
def store(tmp_path):
    return create_store(tmp_path / "s.zarr")


def _gated(run, gate: threading.Event, calls: list):
    real = run.store.put_many

    def put_many(puts):
        calls.append([p.meta.id for p in puts])
        assert gate.wait(30)
        return real(puts)
    run.store.put_many = put_many


def test_a_slow_writer_holds_decode_back(store, tmp_path):
    """The writer blocked on its first parcel: decode stops after a fixed number of videos
    (the decode slots and one finished video waiting for an earlier one, one handed to
    compute, one parcel waiting for the writer, the one being written), not at the end of the
    list; released, everything finishes, in order."""
    videos = _videos(tmp_path, 20)
    decode = FakeDecode()
    gate, calls, got = threading.Event(), [], []
    with Run(store.path, "cpu", cores=2) as run:
        slots = run.decode_slots()
        _gated(run, gate, calls)
        consumer = threading.Thread(target=lambda: got.extend(
            process_stream(run, videos, [decode, FakeSpec()], parcel_videos=1)))
        consumer.start()
        seen, still = -1, 0
        for _ in range(200):                    # until decode has stopped (for 0.5 s)
            time.sleep(0.05)
            still = still + 1 if len(decode.started) == seen else 0
            seen = len(decode.started)
            if still >= 10 and calls:
                break
        assert calls == [["v00"]] and not got             # the writer holds the first parcel
        assert 2 <= len(decode.started) <= slots + 4, (slots, decode.started)
        gate.set()
        consumer.join(30)
        assert not consumer.is_alive()
    assert [o.id for o in got] == [v.id for v in videos]
    assert {o.status for o in got} == {"done"} and len(calls) == 20
    assert all({"decode", "spectrogram", "write"} <= set(o.timings) for o in got)
    assert not _step_threads()


class SlowFirstDecode(FakeDecode):
    """Video 0 decodes until ``go`` is set (a long file); the others at once."""

    def __init__(self, config=None):
        super().__init__(config)
        self.go = threading.Event()

    def run(self, inputs, *, source=None, device="cpu"):
        if Path(source).stem == "v00":
            self.started.append(0)
            assert self.go.wait(30)
            self.started.pop(self.started.index(0))
        return super().run(inputs, source=source, device=device)


def test_a_long_video_does_not_hold_the_other_decode_slots(store, tmp_path):
    """While the first video is still decoding, a freed slot starts the next video at once
    (one finished video at most waiting for it); the outcomes still come in input order."""
    videos = _videos(tmp_path, 8)
    decode = SlowFirstDecode()
    got = []
    with Run(store.path, "cpu", cores=2) as run:
        slots = run.decode_slots()
        consumer = threading.Thread(target=lambda: got.extend(
            process_stream(run, videos, [decode, FakeSpec()], parcel_videos=1)))
        consumer.start()
        for _ in range(200):
            if len(decode.started) >= slots + 1:
                break
            time.sleep(0.05)
        time.sleep(0.2)                          # (no more than that starts meanwhile)
        assert slots == 2 and sorted(decode.started) == list(range(slots + 1)), decode.started
        assert not got
        decode.go.set()
        consumer.join(30)
        assert not consumer.is_alive()
    assert [o.id for o in got] == [v.id for v in videos]
    assert {o.status for o in got} == {"done"}
    assert not _step_threads()


@dataclasses.dataclass(frozen=True)
class ThreadsConfig(FakeConfig):
    threads: int = 0          # decoder threads, 0: FFmpeg's choice (not in the key)


def test_the_last_videos_decode_with_every_core(store, tmp_path):
    """The last ``slots`` videos of a stream decode with every core of the run as decoder
    threads, the others with one each (``Run.with_threads``: copies of the stage)."""
    seen = {}

    class ThreadsDecode(FakeDecode):
        Config, hash_exclude = ThreadsConfig, ("threads",)

        def run(self, inputs, *, source=None, device="cpu"):
            seen[Path(source).stem] = self.config.threads
            return super().run(inputs, source=source, device=device)

    videos = _videos(tmp_path, 6)
    with Run(store.path, "cpu", cores=2) as run:
        got = list(process_stream(run, videos, [ThreadsDecode(), FakeSpec()], parcel_videos=2))
    assert [o.status for o in got] == ["done"] * 6
    assert seen == {"v00": 1, "v01": 1, "v02": 1, "v03": 1, "v04": 2, "v05": 2}, seen


def test_a_store_that_cannot_be_written_stops_every_step_and_is_raised(store, tmp_path):
    videos = _videos(tmp_path, 12)
    names: set[str] = set()

    with Run(store.path, "cpu", cores=2) as run:
        real = run.store.put_many
        calls = []

        def put_many(puts):
            calls.append(len(puts))
            names.update(_step_threads())
            if len(calls) == 2:
                raise StoreWriteError(f"{store.path}: cannot write (No space left on device)")
            return real(puts)
        run.store.put_many = put_many
        got = []
        with pytest.raises(StoreWriteError, match="No space left"):
            for o in process_stream(run, videos, [FakeDecode(FakeConfig(moments=200)), FakeSpec(),
                                                  FakeModel()], parcel_videos=2):
                got.append(o)
        assert not _step_threads()                        # every step has ended
    assert names == STEPS                                 # (all five were running)
    assert len(calls) == 2 and [o.id for o in got] == [v.id for v in videos[:calls[0]]]
    assert not _run_threads()


@pytest.mark.parametrize("how", ["close", "del"])
def test_a_generator_abandoned_midway_leaves_no_thread(store, tmp_path, how):
    """Closed (or dropped) after its first outcome: every step thread has ended when that
    returns, decode stopped well before the end of the list, and the first videos' transient
    arrays were let go as soon as their parcel was made (the stream holds no finished video)."""
    videos = _videos(tmp_path, 60)
    decode = FakeDecode(FakeConfig(moments=200))           # groups of 3 videos
    with Run(store.path, "cpu", cores=2) as run:
        stream = process_stream(run, videos, [decode, FakeSpec(), FakeModel()], parcel_videos=1)
        first = next(stream)
        assert first.id == "v00" and first.status == "done" and _step_threads()
        gc.collect()
        assert decode.refs[0]() is None and decode.refs[1]() is None
        if how == "close":
            stream.close()
        else:
            del stream
        assert not _step_threads()
        assert len(decode.started) < 40, len(decode.started)
    assert not _run_threads()


def test_ctrl_c_while_waiting_for_an_outcome_ends_every_step(store, tmp_path):
    """A KeyboardInterrupt in the caller, blocked in the stream (the writer is slow): it
    propagates, and every step has ended when it does (the write under way finishes first)."""
    videos = _videos(tmp_path, 30)
    gate, calls = threading.Event(), []

    def interrupt():                    # once the writer is blocked on its first parcel (on a
        for _ in range(600):            # loaded machine that can take longer than any fixed delay)
            if calls:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        _thread.interrupt_main()
        time.sleep(0.3)
        gate.set()
    with Run(store.path, "cpu", cores=2) as run:
        _gated(run, gate, calls)
        stream = process_stream(run, videos, [FakeDecode(), FakeSpec()], parcel_videos=1)
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            next(stream)
        assert not _step_threads() and calls == [["v00"]]
    assert not _run_threads()


def test_outcomes_keep_input_order_with_failures_from_every_step(store, tmp_path):
    """Failures at plan (no file), decode, the per-video stage and the batchable stage (its
    batch fails: the culprit is found video by video), interleaved with good videos: one
    outcome per video, in input order, each failure one line and recorded; a parcel closes once
    it holds ``parcel_videos`` finished videos (a group goes into one whole);
    a second run with another model config reads its stored inputs."""
    videos = _videos(tmp_path, 14, missing={3})
    stages = [FakeDecode(FakeConfig(moments=200, fail=(1, 8))), FakeSpec(FakeConfig(fail=(5,))),
              FakeModel(FakeConfig(fail=(6, 12)))]
    sizes = []
    with Run(store.path, "cpu", cores=2) as run:
        real = run.store.put_many
        run.store.put_many = lambda puts: (sizes.append(len(puts)), real(puts))[1]
        got = list(process_stream(run, videos, stages, "no file found (test)", parcel_videos=3))
    store.commit()
    assert [o.id for o in got] == [v.id for v in videos]
    failed = {o.id: (o.stage, o.reason) for o in got if o.status == "failed"}
    assert {k: s for k, (s, _) in failed.items()} == {
        "v01": "decode", "v03": "decode", "v05": "spectrogram", "v06": "features",
        "v08": "decode", "v12": "features"}
    assert "no file found (test)" in failed["v03"][1]
    assert "cannot be decoded (test)" in failed["v08"][1] and "v08.bin" in failed["v08"][1]
    assert "model failed (test)" in failed["v12"][1]
    assert all("\n" not in r for _, r in failed.values())
    # groups of 3 live videos (600 moments); a parcel closes at >= 3 live videos: [v00 v02 v04],
    # [v07 v09] + [v10 v11] (v06, v12 failed in the model), [v13] at the end
    assert sizes == [3, 4, 1]
    st = open_store(store.path)
    assert st.ids() == [f"v{k:02d}" for k in (0, 2, 4, 7, 9, 10, 11, 13)]
    assert sorted(f.id for f in st.failures()) == sorted(failed)
    assert st.read("v09", ["z"])["z"][0, 0] == pytest.approx(19.0)
    assert not _step_threads()

    again = [stages[0], stages[1], FakeModel(FakeConfig(fail=(6, 12), tag=1))]
    with Run(store.path, "cpu", cores=2) as run:
        got = list(process_stream(run, videos, again, "no file found (test)"))
    done = [o for o in got if o.status == "done"]
    assert [o.id for o in got] == [v.id for v in videos] and len(done) == 8
    assert all("read" in o.timings and "features" in o.timings and "decode" not in o.timings
               for o in done)


def test_a_pipe_holds_one_item_and_a_handoff_waits_until_it_is_taken():
    steps = Steps()
    plain, handoff = steps.pipe(), steps.pipe(handoff=True)
    plain.put(1)
    t0 = time.perf_counter()
    with pytest.raises(Stopped):
        threading.Timer(0.3, steps.stop.set).start()
        plain.put(2)                                        # full: waits until stopped
    assert time.perf_counter() - t0 >= 0.25
    steps = Steps()
    handoff = Pipe(steps, handoff=True)
    order = []

    def take():
        time.sleep(0.3)
        order.append(("taken", handoff.get()))
    t = threading.Thread(target=take)
    t.start()
    handoff.put("x")
    order.append(("put returned", None))
    t.join()
    assert order == [("taken", "x"), ("put returned", None)]

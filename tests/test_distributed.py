"""Extraction on dask.distributed: 2 workers give the same store as 1; a worker killed mid-run
loses nothing and doubles nothing; model stages run only on workers that declare a GPU; a video
that fails to decode is recorded once, not retried; a stage the workers cannot load fails the
run with one line, quickly, instead of hanging.

Workers import this module as ``tests.test_distributed`` (the stage subclasses below travel to
them by reference): the ``cluster`` fixture puts the repository root on their ``sys.path``."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from l2l.datasets.base import load_dataset
from l2l.pipeline.extract import extract, plan_stages
from l2l.pipeline.runner import RunnerError, local_cluster, run_dask
from l2l.stages.base import Stage
from l2l.stages.decode import Decode
from l2l.stages.spectrogram import Spectrogram
from l2l.store import ArrayRecord, VideoMeta, create_store, open_store
from helpers import write_video as _write_video

GOOD = [("a", 64, 300.0), ("b", 80, 500.0), ("c", 48, 700.0), ("d", 96, 900.0), ("e", 33, 1100.0),
        ("f", 70, 1300.0)]


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    vids = root / "videos"
    vids.mkdir()
    for vid, frames, tone in GOOD:
        _write_video(vids / f"v_{vid}.mp4", frames=frames, tone_hz=tone)
    (vids / "v_noise.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    db = {vid: {"subset": "training", "duration": 2.0, "url": "",
                "annotations": [{"segment": [0.0, 1.0], "label": "Run" if i % 2 else "Swim"}]}
          for i, vid in enumerate([g[0] for g in GOOD] + ["noise"])}
    ann = root / "anno.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    return root, load_dataset("activitynet", vids, ann)


@pytest.fixture(scope="module")
def reference(dataset):
    """The 1-worker (serial) run."""
    root, ds = dataset
    s = extract(ds, root / "ref", stages=plan_stages(["decode", "spectrogram"]), workers=1,
                device="cpu", progress=False)
    assert (s.done, s.failed) == (len(GOOD), 1)
    return open_store(root / "ref")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes; the first declares GPU=1 (a label only: nothing here uses CUDA).
    Worker processes start with this process's ``sys.path``: the repository root stays on it
    while the cluster lives, so that a worker the nanny restarts can import this module too."""
    added = str(REPO) not in sys.path
    if added:
        sys.path.insert(0, str(REPO))
    c = local_cluster(2, gpus=1, silence_logs=int(os.environ.get("L2L_TEST_LOGS", "40")))
    yield c
    c.close()
    if added:
        sys.path.remove(str(REPO))


def _assert_same_videos(st, ref, fields=("frames", "times", "frame_index", "logmel")):
    assert st.ids() == ref.ids() == sorted(g[0] for g in GOOD)
    for vid in ref.ids():
        assert st.meta(vid) == ref.meta(vid)
        got, want = st.read(vid, fields), ref.read(vid, fields)
        for f in fields:
            assert got[f].dtype == want[f].dtype and np.array_equal(got[f], want[f]), (vid, f)
        assert {k: r.key for k, r in st.records(vid).items() if k in fields} == \
               {k: r.key for k, r in ref.records(vid).items() if k in fields}


def _rows_stored(st, field: str) -> tuple[int, int]:
    """(rows of ``field`` in all segments on disk, rows the index uses): equal when no video's
    rows were written twice."""
    import zarr
    used = [(f["seg"], f["arr"]) for v in st.ids() for n, f in st.index["videos"][v]["fields"].items()
            if n == field]
    on_disk = sum(zarr.open_array(str(st.path / "segments" / seg / arr), mode="r").shape[0]
                  for seg, arr in set(used))
    return on_disk, sum(st.meta(v).num_moments for v in st.ids())


def test_two_workers_equal_one_and_decode_failure_recorded_once(dataset, reference):
    root, ds = dataset
    store = create_store(root / "two")
    outcomes = list(run_dask(str(store.path), list(ds.videos),
                             plan_stages(["decode", "spectrogram"]), device="cpu", workers=2,
                             progress=False))
    assert sorted(o.id for o in outcomes) == sorted(v.id for v in ds.videos)   # each video once
    assert {o.id for o in outcomes if o.status == "failed"} == {"noise"}
    # the failure was staged exactly once: returned as a record, never raised and retried
    staged = [store._parcel_attrs(p) for p in store._list_parcels()]
    assert [a["failure"]["id"] for a in staged if a["kind"] == "failure"] == ["noise"]
    assert sum(a["kind"] == "put" for a in staged) == len(GOOD)
    store.commit()
    st = open_store(root / "two")
    _assert_same_videos(st, reference)
    assert st.verify(["frames", "times", "frame_index", "logmel"]) == []
    assert [f.id for f in st.failures()] == ["noise"]


class KillOnceSpectrogram(Spectrogram):
    """The spectrogram stage, except that the first call anywhere kills its worker process
    (a marker file, created exclusively, says it happened).  Same name and config, hence the
    same cache keys and records as the real stage."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def run(self, inputs, *, source=None, device="cpu"):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().run(inputs, source=source, device=device)
        os.write(fd, str(source).encode())
        os.close(fd)
        os._exit(1)                                         # the worker dies mid-task


def test_killed_worker_loses_nothing_and_doubles_nothing(dataset, reference, cluster, tmp_path):
    root, ds = dataset
    marker = tmp_path / "killed"
    store = tmp_path / "store"
    s = extract(ds, store, stages=[Decode(), KillOnceSpectrogram(str(marker))],
                scheduler=cluster.scheduler_address, device="cpu", progress=False)
    assert marker.exists(), "no worker was killed: the test did not test anything"
    killed = Path(marker.read_text()).name
    assert (s.done, s.failed) == (len(GOOD), 1), (s.line(), s.failures)
    st = open_store(store)
    _assert_same_videos(st, reference)
    assert killed in {f"v_{v}.mp4" for v in st.ids()}        # the killed video was redone
    assert st.verify() == []
    assert [f.id for f in st.failures()] == ["noise"]
    for field in ("frames", "logmel"):
        on_disk, used = _rows_stored(st, field)
        assert on_disk == used, f"{field}: {on_disk} rows on disk for {used} moments"
    # a rerun finds everything complete
    s2 = extract(ds, store, stages=plan_stages(["decode", "spectrogram"]),
                 scheduler=cluster.scheduler_address, device="cpu", progress=False)
    assert (s2.done, s2.skipped, s2.failed) == (0, len(GOOD), 1)


def test_workers_run_without_the_profiler_and_with_a_slow_tick(cluster):
    """The embedded cluster's workers (forked or, as here for the GPU-labelled one, spawned)
    get ``QUIET_CLUSTER``: no statistical profiler sampling the decode thread every 10 ms."""
    from distributed import Client

    def settings(dask_worker):
        import dask
        return (dask.config.get("distributed.worker.profile.enabled"),
                dask.config.get("distributed.admin.tick.interval"), len(dask_worker.profile_history))

    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)   # (one may be restarting after a test killed it)
        got = client.run(settings)
    assert len(got) == 2
    assert all(v == (False, "500ms", 0) for v in got.values()), got


def _threaded_swscale_left_behind():
    """libswscale contexts with worker threads (FFmpeg's choice of threads) where a forked
    child would free them: PyAV's reformatter of this thread (PyAV 19 keeps one per thread;
    an encoder fed RGB frames makes it too), and one in a reference cycle, garbage that only a
    collection frees."""
    import av
    from av.video.reformatter import VideoReformatter
    frame = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24")
    yuv = frame.reformat(format="yuv420p")
    r = VideoReformatter()
    r.reformat(yuv, width=112, height=84, format="rgb24", threads=0)
    cycle = [r]
    cycle.append(cycle)


def test_codec_threads_left_in_this_process_do_not_hang_a_forked_worker():
    """Freed in a forked child (where their threads do not exist), such contexts hang the child
    for ever (the whole suite hung so on Python 3.12 with PyAV 19); a forking cluster pins
    this thread's and collects the garbage before each fork."""
    import gc
    from distributed import Client
    gc.disable()
    try:
        _threaded_swscale_left_behind()
        cluster = local_cluster(1, silence_logs=int(os.environ.get("L2L_TEST_LOGS", "40")))
    finally:
        gc.enable()
    try:
        with Client(cluster) as client:
            fut = client.submit(gc.collect, pure=False)
            assert fut.result(timeout=30) >= 0          # the worker's collection ends
    finally:
        cluster.close(timeout=10)


def test_task_that_ran_twice_is_stored_once(tmp_path):
    """A worker that dies after ``put`` has its task rerun: two parcels of one video; commit
    writes only the later one's rows."""
    st = create_store(tmp_path / "s")
    meta = VideoMeta(id="x", labels=("Run",), subset="training", duration=1.0, fps=30.0,
                     num_moments=3, has_audio=True)
    rec = ArrayRecord(stage="decode", config={"type": "decode"}, key="k", upstream={}, versions={})
    first, second = np.full((3, 4), 1, np.float32), np.full((3, 4), 2, np.float32)
    st.put(meta, {"times": first}, {"times": rec}, replace=True)
    st.put(meta, {"times": second}, {"times": rec}, replace=True)
    counts = st.commit()
    assert counts["superseded"] == 1 and counts["videos"] == 1
    st = open_store(tmp_path / "s")
    assert np.array_equal(st.read("x", ["times"])["times"], second)
    assert _rows_stored(st, "times") == (3, 3)
    assert st._list_parcels() == []


@dataclasses.dataclass(frozen=True)
class FakeFeaturesConfig:
    dim: int = 8


class FakeFeatures(Stage):
    """Named like the model stage; refuses to run on a worker that does not declare a GPU, and
    leaves a file named after the worker that ran it."""

    name = "features"
    Config = FakeFeaturesConfig
    inputs = ("frames", "logmel")
    outputs = ("image",)
    uses_gpu = True              # a model stage, as far as the runner is concerned

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir

    def run(self, inputs, *, source=None, device="cpu"):
        from distributed import get_worker
        w = get_worker()
        if not w.state.total_resources.get("GPU"):
            raise RuntimeError(f"model stage ran on {w.name}, which has no GPU")
        Path(self.log_dir, str(w.name)).touch()
        f = inputs["frames"].reshape(len(inputs["frames"]), -1)[:, :self.config.dim]
        return {"image": f.astype(np.float16) + inputs["logmel"][:, 0, :self.config.dim]}


def test_model_stage_runs_only_on_gpu_workers_fed_by_decode_tasks(dataset, reference, cluster,
                                                                  tmp_path):
    root, ds = dataset
    log = tmp_path / "ran_on"
    log.mkdir()
    store = create_store(tmp_path / "s")
    outcomes = list(run_dask(str(store.path), list(ds.videos),
                             [Decode(), Spectrogram(), FakeFeatures(str(log))], device="cpu",
                             scheduler=cluster.scheduler_address, progress=False,
                             model_resources={"GPU": 1}, gpu_batch=2))
    assert sorted(o.id for o in outcomes) == sorted(v.id for v in ds.videos)
    assert {o.id: o.status for o in outcomes if o.status != "done"} == {"noise": "failed"}, outcomes
    assert [p.name for p in log.iterdir()] == ["l2l-gpu-0"]
    store.commit()
    st = open_store(tmp_path / "s")
    _assert_same_videos(st, reference)
    for vid in st.ids():
        got = st.read(vid, ["frames", "logmel", "image"])
        want = got["frames"].reshape(len(got["frames"]), -1)[:, :8].astype(np.float16) \
            + got["logmel"][:, 0, :8]
        assert np.array_equal(got["image"], want)
    assert st.verify(["frames", "logmel", "image"]) == []


def _cannot_import():
    raise ImportError("No module named 'l2l_missing_plugin'")


class UnloadableSpectrogram(Spectrogram):
    """Pickles in the parent; unpickling it on a worker fails as a module missing there would."""

    def __reduce__(self):
        return (_cannot_import, ())


def test_a_stage_the_workers_cannot_load_fails_the_run_in_one_line(dataset, cluster, tmp_path):
    root, ds = dataset
    t = time.monotonic()
    with pytest.raises(RunnerError) as e:
        extract(ds, tmp_path / "s", stages=[Decode(), UnloadableSpectrogram()],
                scheduler=cluster.scheduler_address, device="cpu", progress=False)
    assert time.monotonic() - t < 60
    msg = str(e.value)
    assert "\n" not in msg and "cannot start" in msg, msg
    assert "ImportError" in msg and "l2l_missing_plugin" in msg, msg
    st = open_store(tmp_path / "s")
    assert st.ids() == [] and st._list_parcels() == []          # nothing was extracted


class StoredOnly(Stage):
    """A batchable stage over stored inputs only (a features stage without the model)."""

    name = "features"
    Config = FakeFeaturesConfig
    inputs = ("frames", "logmel")
    outputs = ("image",)
    batchable = True

    def run(self, inputs, *, source=None, device="cpu"):
        f = inputs["frames"].reshape(len(inputs["frames"]), -1)[:, :self.config.dim]
        return {"image": f.astype(np.float16) + inputs["logmel"][:, 0, :self.config.dim]}


def test_a_run_that_reads_only_stored_inputs_runs_in_one_process(dataset, reference, tmp_path,
                                                                  monkeypatch):
    import shutil
    from l2l.pipeline import runner
    from l2l.pipeline.extract import reads_media
    from l2l.stages.spectrogram import SpectrogramConfig
    root, ds = dataset
    shutil.copytree(reference.path, tmp_path / "s")
    stages = [Decode(), Spectrogram(), StoredOnly()]
    videos = list(ds.videos)
    assert not reads_media(tmp_path / "s", videos, stages)     # ("noise": a recorded failure)
    assert reads_media(tmp_path / "s", videos, stages, skip_failed=False)
    assert reads_media(tmp_path / "s", videos, [Decode(), Spectrogram(SpectrogramConfig(floor=1e-3))])
    assert reads_media(tmp_path / "missing", videos, stages)

    class Started(Exception):
        pass

    def no_cluster(*a, **k):
        raise Started()
    monkeypatch.setattr(runner, "start_cluster", no_cluster)
    with pytest.raises(Started):          # a model on the CPU: worker processes scale better
        extract(ds, tmp_path / "s", stages=[Decode(), Spectrogram(), StoredOnlyModel()],
                workers=2, device="cpu", progress=False)
    s = extract(ds, tmp_path / "s", stages=stages, workers=2, device="cpu", progress=False)
    assert (s.done, s.failed) == (len(GOOD), 1) and "one process" in " ".join(s.notes)
    st = open_store(tmp_path / "s")
    _assert_same_videos(st, reference)
    for vid in st.ids():
        got = st.read(vid, ["frames", "logmel", "image"])
        assert np.array_equal(got["image"], StoredOnly().run(got)["image"])


class StoredOnlyModel(StoredOnly):
    uses_gpu = True

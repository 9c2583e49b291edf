"""How ``run_dask`` orders and threads its shards (``pipeline/runner.py``): the largest media
file first, so that a run does not end on one worker decoding a big file while the others wait;
the run's last shards decode with the host's cores as FFmpeg threads (``Run.set_cores``)."""
from __future__ import annotations

import os

from l2l.datasets.base import VideoRecord
from l2l.pipeline import runner
from l2l.pipeline.process import Run
from l2l.stages.decode import Decode, DecodeConfig


def _record(tmp_path, name: str, size: int | None) -> VideoRecord:
    path = tmp_path / name
    if size is not None:
        path.write_bytes(b"x" * size)
    return VideoRecord(id=name, path=path if size is not None else None, labels=(), subset="training")


def test_largest_file_first_missing_last_ties_in_list_order(tmp_path):
    vids = [_record(tmp_path, n, s) for n, s in
            [("a", 10), ("b", 300), ("none", None), ("c", 10), ("d", 2000)]]
    vids.append(VideoRecord(id="gone", path=tmp_path / "gone.mp4", labels=(), subset="training"))
    assert [v.id for v in runner.largest_first(vids)] == ["d", "b", "a", "c", "none", "gone"]


def test_beyond_sort_videos_the_list_stays_as_it_is(tmp_path, monkeypatch):
    vids = [_record(tmp_path, n, s) for n, s in [("a", 1), ("b", 2), ("c", 3)]]
    monkeypatch.setattr(runner, "SORT_VIDEOS", 2)
    assert [v.id for v in runner.largest_first(vids)] == ["a", "b", "c"]


def test_set_cores_gives_a_lone_decode_every_core_it_is_given(tmp_path):
    mine = len(os.sched_getaffinity(0))
    with Run(tmp_path / "s", cores=1) as run:
        stage = Decode(DecodeConfig())
        assert run.with_threads(stage, 1).config.threads == 1
        run.set_cores(mine)                       # a tail shard: the host's cores
        assert run.with_threads(stage, 1).config.threads == mine
        assert run.with_threads(stage, 1).key({}) == stage.key({})   # threads: not in the key
        run.set_cores(1)
        assert run.with_threads(stage, 1).config.threads == 1

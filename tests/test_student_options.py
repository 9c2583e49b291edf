"""train-student's recipe options: ``--moments-per-video K`` (an epoch is K random moments of
each video, seeded) and ``--audio-pool`` (max by default, as in the authors' code; a checkpoint
that recorded avg still loads as avg)."""
from __future__ import annotations

import types

import numpy as np
import torch


class FakeStore:
    """What MomentLoader reads: ``meta(v).num_moments`` and ``read(v, names)``; row r of video v
    holds (v, r) so that a batch says which moments it came from."""

    def __init__(self, counts):
        self.counts = dict(counts)

    def meta(self, vid):
        return types.SimpleNamespace(num_moments=self.counts[vid])

    def read(self, vid, names):
        n = self.counts[vid]
        rows = np.stack([np.full(n, int(vid[1:])), np.arange(n)], 1)
        return {name: rows for name in names}


def _loader(k, seed=0, max_moments=None):
    from l2l.training.student import MomentLoader
    counts = {f"v{i}": c for i, c in enumerate([3, 50, 120, 7, 400])}
    st = FakeStore(counts)
    return MomentLoader(st, list(counts), ["x"], {v: 0 for v in counts}, batch_size=4,
                        max_moments=max_moments, seed=seed, chunk_videos=2,
                        moments_per_video=k), counts


def test_moments_per_video_draws_k_of_each_video_seeded():
    loader, counts = _loader(10)
    seen = np.concatenate([b["x"] for b in loader.epoch(0)])
    per_video = {v: sorted(seen[seen[:, 0] == int(v[1:]), 1].tolist()) for v in counts}
    assert {v: len(r) for v, r in per_video.items()} == {v: min(c, 10) for v, c in counts.items()}
    assert all(len(set(r)) == len(r) for r in per_video.values())        # no moment twice
    assert per_video["v0"] == [0, 1, 2]                                   # all of a short video
    assert len(loader) == -(-len(seen) // 4)
    again, _ = _loader(10)
    assert np.array_equal(np.concatenate([b["x"] for b in again.epoch(0)]), seen)   # deterministic
    assert not np.array_equal(loader.draw(1), loader.draw(0))             # a new draw each epoch
    other, _ = _loader(10, seed=1)
    assert not np.array_equal(other.draw(0), loader.draw(0))
    assert len(_loader(10, max_moments=20)[0].draw(0)) == 20              # both caps apply
    everything, _ = _loader(None)
    assert len(everything.draw(0)) == sum(counts.values())


def test_audio_pool_defaults_to_max_and_old_avg_checkpoints_stay_avg(tmp_path):
    from l2l.cli.train_student import train_student
    from l2l.models.students import build_student, load_student, save_student
    from l2l.training.student import TrainConfig
    assert TrainConfig().audio_pool == "max"
    assert next(p for p in train_student.params if p.name == "audio_pool").default == "max"
    torch.manual_seed(0)
    old = build_student(num_classes=3, time_pool="avg")
    save_student(old, tmp_path / "student.pt", config={"train": {"audio_pool": "avg"}},
                 classes=["a", "b", "c"])
    got, _ = load_student(tmp_path)
    assert got.audio_trunk.time_pool == "avg"
    x = torch.randn(2, 1, 101, 40)
    with torch.no_grad():
        assert torch.equal(got.audio_trunk(x), old.eval().audio_trunk(x))

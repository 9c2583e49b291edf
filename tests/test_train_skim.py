"""train-skim on a small real (HDF5) store: loss goes down, one read, crops, resume, errors."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from l2l.store import ArrayRecord, VideoMeta, create_store, open_store
from l2l.training.skim import (FeatureSet, SkimError, TrainConfig, load_skim, random_crops,
                               train_skim)

CLASSES = ["bowling", "drumming", "singing"]
REC = ArrayRecord(stage="test", config={}, key="k", upstream={}, versions={})


def small_store(path, *, n_train=24, n_val=9, seed=0, names=("image", "audio")):
    """Videos of 20-40 moments; each moment is noise plus a weak class direction in a few
    moments, so the label is learnable but not trivial."""
    rng = np.random.default_rng(seed)
    store = create_store(path)
    for subset, n in (("training", n_train), ("validation", n_val)):
        for i in range(n):
            N, y = int(rng.integers(20, 41)), i % 3
            arrays = {}
            for name in names:
                a = rng.uniform(0, 1, (N, 512)).astype(np.float32)
                a[rng.choice(N, 4, replace=False), y * 100:(y + 1) * 100] += 1.5
                arrays[name] = a.astype(np.float16)
            meta = VideoMeta(id=f"{subset[0]}{i:03d}", labels=(CLASSES[y],), subset=subset,
                             duration=N / 1.875, fps=30.0, num_moments=N, has_audio=True)
            store.put(meta, arrays, {k: REC for k in arrays})
    store.commit()
    store.set_info("classes", CLASSES)
    return open_store(path)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory.mktemp("st") / "s.h5")


class Spy:
    """Counts the store reads made through it."""

    def __init__(self, store):
        self.store, self.calls = store, []
        self.path = store.path

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name in ("read", "read_many"):
            def wrapped(*a, **k):
                self.calls.append(name)
                return attr(*a, **k)
            return wrapped
        return attr


def test_feature_set_reads_once_and_cuts_exact_windows(store):
    spy = Spy(store)
    fs = FeatureSet.from_store(spy, ["image", "audio"], subset="training", classes=CLASSES)
    assert spy.calls == ["read_many"]
    assert len(fs) == 24 and fs.labels[4] == [1]
    rng = np.random.default_rng(0)
    vids = np.array([3, 0, 7])
    starts, lens = random_crops(fs.lengths[vids], 10, 30, rng)
    assert ((lens >= 10) & (lens <= np.minimum(30, fs.lengths[vids]))).all()
    assert ((starts >= 0) & (starts + lens <= fs.lengths[vids])).all()
    (img, aud), mask = fs.batch(vids, ["image", "audio"], starts, lens)
    assert img.shape == (3, lens.max(), 512) and img.dtype == torch.float32
    for r, v in enumerate(vids):
        want = store.read(fs.ids[v], ["audio"])["audio"][starts[r]:starts[r] + lens[r]]
        assert mask[r].sum() == lens[r] and not mask[r, lens[r]:].any()
        assert np.array_equal(aud[r, :lens[r]].numpy(), want.astype(np.float32))
    # a window longer than the video is clipped to it
    s, n = random_crops(np.array([5]), 200, 500, rng)
    assert n[0] == 5 and s[0] == 0


def test_train_skim_lowers_the_loss_and_checkpoints(store, tmp_path):
    cfg = TrainConfig(steps=3, epochs=4, batch_size=8, lr=0.05, crop_min=10, crop_max=30,
                      min_steps=0)
    warned = []
    row = train_skim(store, tmp_path / "run", config=cfg, device="cpu", progress=False,
                     warn=warned.append)
    assert len(warned) == 1 and "only 16 optimizer steps" in warned[0]   # 4 epochs x 24 / 6
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.1, losses
    assert "val_mAP" in rows[0] and row["epoch"] == 4
    # milestones 15, 20 of 25 scale to epochs 2 and 3 of 4: epochs 1-2 at lr, 3 at lr/10, 4 at lr/100
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.05, 5e-3, 5e-4])
    model, ck = load_skim(tmp_path / "run")
    assert ck["config"]["steps"] == 3 and ck["classes"] == CLASSES and ck["epoch"] == 4
    assert ck["train_config"]["crop_min"] == 10
    # Psi was not frozen (no student), so the model's own head is the baselines' head
    assert ck["head"] is None


def test_schedule_counts_optimizer_steps_and_keeps_the_paper_recipe_at_scale():
    c = TrainConfig()
    assert c.plan(10024) == (256, 25)              # ActivityNet: 40 batches x 25 epochs
    assert c.plan(48) == (12, 125)                 # 4 batches an epoch -> 500 steps
    assert c.plan(9) == (2, 125)                   # 9 % 2 == 1: the lone video is dropped
    assert TrainConfig(min_steps=0, epochs=3).plan(48) == (12, 3)
    assert TrainConfig().scaled_milestones(125) == [75, 100]


def test_resume_continues_and_refuses_other_options(store, tmp_path):
    cfg = TrainConfig(steps=2, epochs=3, batch_size=8, crop_min=10, crop_max=30, min_steps=0)

    class Stop(Exception):
        pass

    def stop_after_first(row, **_):
        if row["epoch"] == 1:
            raise Stop
    with pytest.raises(Stop):
        train_skim(store, tmp_path / "r", config=cfg, device="cpu", progress=False,
                   callbacks=[stop_after_first])
    with pytest.raises(SkimError, match="--resume"):
        train_skim(store, tmp_path / "r", config=cfg, device="cpu", progress=False)
    train_skim(store, tmp_path / "r", config=cfg, device="cpu", progress=False, resume=True)
    rows = list(csv.DictReader(open(tmp_path / "r" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # the resumed run ends with exactly the weights of an uninterrupted one
    train_skim(store, tmp_path / "whole", config=cfg, device="cpu", progress=False)
    resumed, whole = load_skim(tmp_path / "r")[0], load_skim(tmp_path / "whole")[0]
    for (k, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.equal(a, b), k
    other = TrainConfig(steps=4, epochs=3, batch_size=8, crop_min=10, crop_max=30, min_steps=0)
    with pytest.raises(SkimError, match="another config"):
        train_skim(store, tmp_path / "r", config=other, device="cpu", progress=False, resume=True)


def test_long_runs_checkpoint_every_few_epochs_and_resume_exactly(tmp_path):
    """50 short epochs write a checkpoint every 2nd epoch; a run stopped after epoch 5 resumes
    from epoch 4, its log holds each epoch once, and it ends with the uninterrupted weights."""
    tiny = small_store(tmp_path / "tiny.h5", n_train=4, n_val=2, seed=3)
    cfg = TrainConfig(steps=1, epochs=50, crop_min=5, crop_max=10, min_steps=0)
    seen = []

    class Stop(Exception):
        pass

    def stop_after_5(row, **_):
        ck = tmp_path / "r" / "checkpoint.pt"
        seen.append(load_skim(ck)[1]["epoch"] if ck.exists() else 0)
        if row["epoch"] == 5:
            raise Stop
    with pytest.raises(Stop):
        train_skim(tiny, tmp_path / "r", config=cfg, device="cpu", progress=False,
                   callbacks=[stop_after_5], warn=lambda m: None)
    assert seen == [0, 2, 2, 4, 4], seen
    train_skim(tiny, tmp_path / "r", config=cfg, device="cpu", progress=False, resume=True,
               warn=lambda m: None)
    rows = list(csv.DictReader(open(tmp_path / "r" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 51))
    train_skim(tiny, tmp_path / "whole", config=cfg, device="cpu", progress=False,
               warn=lambda m: None)
    resumed, whole = load_skim(tmp_path / "r")[0], load_skim(tmp_path / "whole")[0]
    for (k, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_inputs_get_one_clear_line(store, tmp_path):
    no_audio = small_store(tmp_path / "img.h5", n_train=3, n_val=0, names=("image",))
    with pytest.raises(SkimError, match="audio") as e:
        train_skim(no_audio, tmp_path / "x", config=TrainConfig(epochs=1), device="cpu",
                   progress=False)
    assert "\n" not in str(e.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SkimError, match="not a skim checkpoint"):
        load_skim(tmp_path / "junk.pt")

    class OtherStudent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            from l2l.models.students import Fusion
            self.fusion, self.classifier = Fusion(), torch.nn.Linear(512, 5)
    with pytest.raises(SkimError, match="classes"):
        train_skim(store, tmp_path / "y", student=OtherStudent(), config=TrainConfig(epochs=1),
                   device="cpu", progress=False)

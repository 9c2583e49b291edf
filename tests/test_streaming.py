"""Streamed features (``--memory-budget``) give the in-memory results bit for bit; one skim run
gives every early stop k; evaluate's extra rows (s = 5, 10, 20, unaggregated, macro AP beside the
paper's points); failed videos recorded in the store count in the "all listed" row."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from l2l.evaluation.featureset import FeatureSet, choose_streaming, memory_budget
from l2l.store import Failure, open_store
from l2l.training.skim import TrainConfig, load_skim, train_skim
from test_evaluate import CLASSES, Student, sparse_videos, write_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    store = write_store(root / "s.zarr", {"training": sparse_videos(40, seed=1),
                                          "validation": sparse_videos(24, seed=2)})
    return root, store


def test_streamed_batches_equal_in_memory(small):
    _, store = small
    mem = FeatureSet.from_store(store, ["image", "audio"], subset="training", classes=CLASSES)
    st = FeatureSet.from_store(store, ["image", "audio"], subset="training", classes=CLASSES,
                               stream=True)
    assert st.streamed and not st.arrays and st.ids == mem.ids and st.labels == mem.labels
    assert np.array_equal(st.lengths, mem.lengths)
    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(5):
        v = rng.permutation(len(mem))[:7]
        n = np.minimum(rng.integers(5, 50, 7), mem.lengths[v])
        jobs.append((v, (rng.random(7) * (mem.lengths[v] - n + 1)).astype(np.int64), n))
    jobs.append((np.array([3, 3, 1]), None, None))                 # a repeated video
    got = list(st.batches(jobs, ["image", "audio"], prefetch=2))
    assert len(got) == len(jobs)
    for (v, s, n), (banks, mask) in zip(jobs, got):
        want, wmask = mem.batch(v, ["image", "audio"], s, n)
        assert torch.equal(mask, wmask)
        assert all(torch.equal(a, b) for a, b in zip(banks, want))
    flat = list(st.batches([(np.array([2, 0]), None, None)], ["audio"], flat=True))[0][0][0]
    assert torch.equal(flat, torch.cat([mem.column("audio")[mem.offsets[2]:mem.offsets[3]],
                                        mem.column("audio")[:mem.offsets[1]]]).float())
    assert torch.equal(st.column("image"), mem.column("image"))


def test_read_windows_reads_each_crop_into_a_zero_padded_row(small):
    """``Store.read_windows`` (the store's own, and the generic one every backend inherits):
    each video's window at the start of its row, zeros after it; a window outside the video
    is an error naming it."""
    from l2l.store import Store, StoreError
    _, store = small
    ids = store.ids("training")[:4] + store.ids("training")[:1]     # a repeated video too
    n_of = store.moments(ids)
    starts = [0, 2, n_of[ids[2]] - 1, 1, 3]
    lengths = [n_of[ids[0]], 5, 1, 0, 4]
    whole = {v: store.read(v, ["image", "audio"]) for v in ids}
    for read in (store.read_windows, lambda *a, **k: Store.read_windows(store, *a, **k)):
        got = read(["image", "audio"], ids, starts, lengths, width=max(lengths) + 2)
        for name in ("image", "audio"):
            assert got[name].shape == (5, max(lengths) + 2, 512) and got[name].dtype == np.float16
            for b, (v, a, n) in enumerate(zip(ids, starts, lengths)):
                assert np.array_equal(got[name][b, :n], whole[v][name][a:a + n])
                assert not got[name][b, n:].any()
        with pytest.raises(StoreError, match=f"outside video '{ids[1]}'"):
            read(["image"], ids[:2], [0, n_of[ids[1]] - 2], [1, 3])


def test_budget_picks_streaming(small):
    _, store = small
    ids = store.ids("training")
    need = FeatureSet.nbytes(store, ["image", "audio"], ids)
    n = sum(store.meta(v).num_moments for v in ids)
    assert need == n * 2 * 512 * 2                                  # float16 rows
    assert choose_streaming(store, [(["image", "audio"], ids)] * 2, need) == [False, True]
    assert choose_streaming(store, [(["image", "audio"], ids)], need - 1) == [True]
    assert memory_budget(1.5) == int(1.5 * 2**30) and memory_budget(None) > 0


def test_train_and_evaluate_streamed_equal_in_memory(small, tmp_path):
    """The same seed gives the same weights, log and every metric, streamed or in memory."""
    from l2l.evaluation.report import evaluate
    _, store = small
    cfg = TrainConfig(steps=3, epochs=2, batch_size=8, lr=0.05, min_steps=0)
    for name, gb in (("mem", 100.0), ("stream", 1e-6)):
        train_skim(store, tmp_path / name, student=Student(), config=cfg, device="cpu",
                   progress=False, memory_budget_gb=gb)
    a, _ = load_skim(tmp_path / "mem")
    b, _ = load_skim(tmp_path / "stream")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    strip = lambda p: [r.split(",")[:3] + r.split(",")[4:]                  # no seconds
                       for r in p.read_text().splitlines()]
    assert strip(tmp_path / "mem" / "log.csv") == strip(tmp_path / "stream" / "log.csv")
    ms = [evaluate(store, tmp_path / "mem", tmp_path / f"e{gb}", device="cpu", montage=False,
                   memory_budget_gb=gb) for gb in (100.0, 1e-6)]
    assert ms[0] == ms[1]
    for f in ("curves.json", "predictions/skim.json", "predictions/random.json"):
        assert (tmp_path / "e100.0" / f).read_bytes() == (tmp_path / "e1e-06" / f).read_bytes()


def test_one_run_gives_every_early_stop(small):
    """``readout`` of a T-step run equals the k-step run's logits exactly, also with a
    recognition bank and with the authors' readout."""
    torch.manual_seed(0)
    from l2l.models.skim import build_skim
    for readout in ("inputs", "outputs"):
        m = build_skim(num_classes=4, steps=5, readout=readout,
                       recognizer=torch.nn.Linear(512, 4)).eval()
        banks = [torch.randn(3, 30, 512) for _ in range(2)]
        mask = torch.arange(30)[None] < torch.tensor([[30], [12], [4]])
        with torch.no_grad():
            full = m(banks, mask)
            for k in range(1, 6):
                assert torch.equal(m.readout(full, k), m(banks, mask, steps=k).logits)
                assert torch.equal(m.readout(full, k, banks[0]),
                                   m(banks, mask, steps=k, recognition_bank=banks[0]).logits)


def test_evaluate_rows_and_recorded_failures_cli(small, tmp_path):
    """s = 1..20 with 5, 10, 20; the unaggregated row; macro AP beside the paper's points; and
    failed validation videos recorded by the store count as misses without --annotations."""
    from l2l.cli.main import main
    root, store = small
    ck = tmp_path / "skim"
    train_skim(store, ck, student=Student(), config=TrainConfig(steps=3, epochs=1, batch_size=8,
                                                                 min_steps=0),
               device="cpu", progress=False)
    st = open_store(store.path)
    st.record_failure(Failure(id="gone1", stage="decode", reason="x: bad", subset="validation",
                              labels=(CLASSES[0],)))
    st.record_failure(Failure(id="gone2", stage="decode", reason="y: bad", subset="training",
                              labels=(CLASSES[1],)))                # another subset: not counted
    st.record_failure(Failure(id="old", stage="decode", reason="z: bad"))   # no subset known
    st.commit()
    f = {x.id: x for x in open_store(store.path).failures()}
    assert f["gone1"].subset == "validation" and f["gone1"].labels == (CLASSES[0],)
    r = CliRunner().invoke(main, ["evaluate", "--store", str(store.path), "--checkpoint", str(ck),
                                  "--out", str(tmp_path / "e"), "--device", "cpu",
                                  "--memory-budget", "0.000001", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "24 extracted videos of 25 listed" in r.output and "1 failed videos" in r.output
    assert "skim unagg" in r.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["num_listed"] == 25 and "1 failures recorded without a subset" in m["listed_from"]
    ext, all_ = m["methods"]["skim"], m["all_listed"]["skim"]
    assert all_["top1"] == pytest.approx(ext["top1"] * 24 / 25)
    assert set(m["variants"]) == {"unaggregated"}
    curves = json.loads((tmp_path / "e" / "curves.json").read_text())
    assert curves["stride"]["s"] == [1, 2, 4, 5, 8, 10, 20]
    assert all("sklearn_macro_ap" in r for r in curves["stride"]["skim"])
    report = (tmp_path / "e" / "report.md").read_text()
    assert "| skim (unaggregated" in report
    assert "| 20 |" in report and "| 71.7 |" in report and "| 76.6 |" in report   # paper's points
    assert "macro AP (sklearn)" in report

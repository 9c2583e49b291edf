"""The authors' ActivityNet release in and out: ``l2l store import/export --format listen-to-look``
and their checkpoint as a student, on a replica written here (``release_replica.py``: 150 videos,
int labels in a shuffled class order, a legacy-format checkpoint holding a Namespace)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from release_replica import CLASSES, write_checkpoint, write_replica

from l2l.cli.main import main


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return write_replica(tmp_path_factory.mktemp("replica"))


@pytest.fixture(scope="module")
def imported(replica, tmp_path_factory):
    store = tmp_path_factory.mktemp("imp") / "anet.zarr"
    r = CliRunner().invoke(main, ["store", "import", str(store), "--format", "listen-to-look",
                                  "--source", str(replica["release"]),
                                  "--annotations", str(replica["annotations"])])
    assert r.exit_code == 0, r.output
    return store


def _import(replica, store, source=None, annotations=None):
    return CliRunner().invoke(main, ["store", "import", str(store), "--format", "listen-to-look",
                                     "--source", str(source or replica["release"]),
                                     "--annotations", str(annotations or replica["annotations"])])


def test_import_keeps_every_array_bit_for_bit(replica, imported):
    from l2l.store import open_store
    st = open_store(imported)
    assert len(st.ids()) == 150
    assert replica["order"] != sorted(replica["order"])            # the ints are not sorted
    info = st.info()
    assert info["classes"] == list(CLASSES) and info["dataset"] == "activitynet"
    assert info["release"]["class_order"] == replica["order"]     # inferred, not given
    folders = {"image": "image_features", "audio": "audio_features", "imageaudio": "imageAudio_features"}
    for vid in st.ids():
        got = st.read(vid, list(folders))
        for field, folder in folders.items():
            want = np.load(replica["release"] / folder / f"v_{vid}.npy")
            assert got[field].dtype == want.dtype == np.float32
            assert got[field].tobytes() == want.tobytes()
        meta = st.meta(vid)
        assert meta.labels == (replica["order"][replica["ints"][vid]],)
        assert meta.subset == ("validation" if int(vid[1:4]) % 3 == 0 else "training")
        rec = st.records(vid)["image"]
        assert rec.stage == "import" and rec.upstream["file"] == f"image_features/v_{vid}.npy"
    assert st.verify() == []
    r = CliRunner().invoke(main, ["store", "info", str(imported)])
    assert "image          float32" in r.output and "stage import" in r.output and "WARNING" not in r.output
    assert CliRunner().invoke(main, ["store", "verify", str(imported)]).exit_code == 0


def test_their_head_classifies_as_the_release_labels_say(replica, imported):
    """Their classifier's rows, put in the store's class order, give every video its label on
    the mean of Psi over its moments (the DENSE baseline); without the permutation they would not."""
    from l2l.evaluation.featureset import FeatureSet
    from l2l.models.release import load_release_head
    from l2l.store import open_store
    st = open_store(imported)
    classes = st.info()["classes"]
    head, info = load_release_head(replica["checkpoint"], classes=classes,
                                   class_order=st.info()["release"]["class_order"])
    assert info["classes"] == classes and info["epoch"] == 59
    data = FeatureSet.from_store(st, ["image", "audio"], subset=None, classes=classes)
    with torch.no_grad():
        psi = head.fusion(data.arrays["image"].float(), data.arrays["audio"].float()).numpy()
        mean = np.stack([psi[a:b].mean(0) for a, b in zip(data.offsets[:-1], data.offsets[1:])])
        pred = head.classifier(torch.from_numpy(mean)).argmax(1).numpy()
    truth = np.array([lab[0] for lab in data.labels])
    assert (pred == truth).all()
    unpermuted = mean @ np.asarray(torch.load(replica["checkpoint"], weights_only=False)["model"]
                                   ["module.net_classifier.classifier.weight"]).T
    assert (unpermuted.argmax(1) != truth).any()


def test_export_then_import_gives_the_same_store(replica, imported, tmp_path):
    from l2l.store import open_store
    out = tmp_path / "release-out"
    r = CliRunner().invoke(main, ["store", "export", str(imported), str(out),
                                  "--format", "listen-to-look"])
    assert r.exit_code == 0, r.output
    assert (out / "classes.txt").read_text().splitlines() == replica["order"]
    paths, labels = pickle.loads((out / "val.pkl").read_bytes())
    assert len(paths) == 50 and all(Path(p).is_file() and "/imageAudio_features/" in p for p in paths)
    assert [replica["ints"][Path(p).stem[2:]] for p in paths] == labels
    (out / "classes.txt").unlink()                 # the order is inferred again, not read
    again = tmp_path / "again.zarr"
    r = _import(replica, again, source=out)
    assert r.exit_code == 0, r.output
    a, b = open_store(imported), open_store(again)
    assert a.ids() == b.ids()
    assert a.info()["classes"] == b.info()["classes"]
    assert a.info()["release"]["class_order"] == b.info()["release"]["class_order"]
    for vid in a.ids():
        assert a.meta(vid) == b.meta(vid)
        ra, rb = a.records(vid), b.records(vid)
        assert {k: r.key for k, r in ra.items()} == {k: r.key for k, r in rb.items()}
        assert {k: r.checksum for k, r in ra.items()} == {k: r.checksum for k, r in rb.items()}
        for f, x in a.read(vid, list(ra)).items():
            assert x.tobytes() == b.read(vid, [f])[f].tobytes()


def test_export_student_as_their_checkpoint(replica, imported, tmp_path):
    """--student writes Psi and classifier under their ImageAudioClassifyModel's names and
    shapes (models/imageAudio_model.py, models/networks.py ClassifierNet), rows in the order of
    classes.txt; reading it back gives the student's own weights."""
    from torch import nn

    from l2l.models.release import load_release_head
    from l2l.models.students import build_student, save_student
    from l2l.store import open_store
    torch.manual_seed(0)
    student = build_student(num_classes=len(CLASSES))
    save_student(student, tmp_path / "student" / "student.pt", config={}, classes=list(CLASSES))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["store", "export", str(imported), str(out), "--format",
                                  "listen-to-look", "--student", str(tmp_path / "student")])
    assert r.exit_code == 0, r.output
    ck_path = out / "ImageAudioNet_l2l.pth"

    class ImageAudioModel(nn.Module):          # their models/imageAudio_model.py
        def __init__(self):
            super().__init__()
            self.imageAudio_fc1 = nn.Linear(512 * 2, 512 * 2)
            self.imageAudio_fc2 = nn.Linear(512 * 2, 512)

    class ClassifierNet(nn.Module):            # their models/networks.py
        def __init__(self, input_dim, finetune_classes):
            super().__init__()
            self.classifier = nn.Linear(input_dim, finetune_classes)

    class ImageAudioClassifyModel(nn.Module):  # their models/imageAudioClassify_model.py
        def __init__(self):
            super().__init__()
            self.net_imageAudio = ImageAudioModel()
            self.net_classifier = ClassifierNet(512, len(CLASSES))

    theirs = ImageAudioClassifyModel()
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)   # as their Checkpointer
    theirs.load_state_dict(ck["model"], strict=True)
    assert ck["namespace"].num_classes == len(CLASSES)
    st = open_store(imported)
    head, _ = load_release_head(ck_path, classes=list(CLASSES),
                                class_order=st.info()["release"]["class_order"])
    for k, v in head.state_dict().items():
        assert torch.equal(v, student.state_dict()[k]), k
    first = replica["order"][0]
    assert torch.equal(theirs.net_classifier.classifier.weight[0],
                       student.classifier.weight[CLASSES.index(first)])


def test_a_pickle_that_runs_code_stops_and_writes_nothing(replica, tmp_path):
    import shutil
    src = tmp_path / "release"
    shutil.copytree(replica["release"], src)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    paths, labels = pickle.loads((src / "train.pkl").read_bytes())
    (src / "train.pkl").write_bytes(pickle.dumps((paths, labels + [Evil()])))
    store = tmp_path / "s.zarr"
    r = _import(replica, store, source=src)
    assert r.exit_code == 1
    assert "train.pkl: refused" in r.output and "posix.system" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not marker.exists() and not store.exists()


def test_inconsistent_and_ambiguous_labels_stop_and_write_nothing(replica, tmp_path):
    import shutil
    src = tmp_path / "release"
    shutil.copytree(replica["release"], src)
    paths, labels = pickle.loads((src / "train.pkl").read_bytes())
    bad = list(labels)
    bad[1] = (bad[1] + 1) % len(CLASSES)           # one video's int says another class
    (src / "train.pkl").write_bytes(pickle.dumps((paths, bad)))
    store = tmp_path / "s.zarr"
    r = _import(replica, store, source=src)
    assert r.exit_code == 1 and "inconsistent labels" in r.output and "video v_" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not store.exists()
    # ambiguous: two classes' videos are only ever listed together -> an annotation where the
    # videos of two ints all carry both names
    ann = json.loads(Path(replica["annotations"]).read_text())
    a, b = replica["order"][0], replica["order"][1]
    for e in ann["database"].values():
        if e["annotations"][0]["label"] in (a, b):
            e["annotations"] = [{"segment": [0, 1], "label": a}, {"segment": [1, 2], "label": b}]
    amb = tmp_path / "amb.json"
    amb.write_text(json.dumps(ann))
    r = _import(replica, store, annotations=amb)
    assert r.exit_code == 1 and "ambiguous labels" in r.output and "video v_" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not store.exists()


def test_a_checkpoint_with_another_class_count_stops_and_writes_nothing(imported, tmp_path):
    ck = write_checkpoint(tmp_path / "ImageAudioNet_ActivityNet.pth", num_classes=7, prefix="")
    out = tmp_path / "skim"
    r = CliRunner().invoke(main, ["train-skim", "--store", str(imported), "--out", str(out),
                                  "--student", str(ck), "--epochs", "1", "--device", "cpu"])
    assert r.exit_code == 1
    assert "its classifier has 7 classes, the store has 5" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_missing_feature_file_is_recorded_and_the_import_goes_on(replica, tmp_path):
    import shutil
    src = tmp_path / "release"
    shutil.copytree(replica["release"], src)
    gone = sorted((src / "audio_features").glob("*.npy"))[0]
    gone.unlink()
    store = tmp_path / "s.zarr"
    r = _import(replica, store, source=src)
    assert r.exit_code == 0, r.output
    from l2l.store import open_store
    st = open_store(store)
    assert len(st.ids()) == 149
    (f,) = st.failures()
    assert f.id == gone.stem[2:] and f.stage == "import" and gone.name in f.reason

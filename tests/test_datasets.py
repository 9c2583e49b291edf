"""Data-set adapters on small annotation files written here in each official format, quirks included."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from l2l.datasets.activitynet import write_activitynet_json
from l2l.datasets.base import ADAPTER_MODULES, AnnotationError, VideoRecord, find_video, get_adapter, load_dataset
from l2l.datasets.kinetics_sounds import KINETICS_SOUNDS_CLASSES


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def one_line_error(fn, *needles):
    with pytest.raises(AnnotationError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_registry_knows_every_adapter():
    assert sorted(ADAPTER_MODULES) == ["activitynet", "csv", "folder", "kinetics-sounds", "mini-sports1m",
                                       "synthetic", "ucf101"]
    for name in ADAPTER_MODULES:
        assert callable(get_adapter(name))
    with pytest.raises(KeyError, match="unknown data set"):
        get_adapter("imagenet")
    from l2l.datasets.base import ADAPTERS
    assert set(ADAPTERS) == set(ADAPTER_MODULES)       # each module registers the name listed for it


def test_adding_an_adapter_is_its_module_and_one_line(tmp_path, monkeypatch):
    """A new data set: its own module with ``@register`` + its line in ``ADAPTER_MODULES``;
    ``get_adapter`` then imports the module on first use (nothing else is edited)."""
    import sys
    import l2l.datasets
    from l2l.datasets import base
    (tmp_path / "_toy.py").write_text(
        "from l2l.datasets.base import Dataset, register\n\n\n@register('toy')\n"
        "def load(videos_dir, annotations_path):\n"
        "    return Dataset(name='toy', classes=('a',), videos=())\n")
    (tmp_path / "_lazy.py").write_text("# forgot @register\n")
    monkeypatch.setattr(l2l.datasets, "__path__", [*l2l.datasets.__path__, str(tmp_path)])
    for name in ("_toy", "_lazy"):
        monkeypatch.delitem(sys.modules, f"l2l.datasets.{name}", raising=False)
    monkeypatch.setitem(base.ADAPTER_MODULES, "toy", "_toy")
    monkeypatch.setitem(base.ADAPTER_MODULES, "lazy", "_lazy")
    try:
        assert "toy" not in base.ADAPTERS
        assert get_adapter("toy")(tmp_path, tmp_path / "ann").name == "toy"
        with pytest.raises(KeyError, match="does not @register"):
            get_adapter("lazy")
    finally:
        base.ADAPTERS.pop("toy", None)
        for name in ("_toy", "_lazy"):
            sys.modules.pop(f"l2l.datasets.{name}", None)


def test_find_video_refuses_paths_outside_the_folder(tmp_path):
    touch(tmp_path / "secret.mp4")
    (tmp_path / "videos").mkdir()
    for bad in ("../secret", "a/b", "..", "", "a\\b"):
        with pytest.raises(AnnotationError):
            find_video(tmp_path / "videos", bad)


# --------------------------------------------------------------------------------- ActivityNet
def anet_doc(**database):
    taxonomy = [{"nodeId": 1, "nodeName": "Root", "parentId": None, "parentName": None},
                {"nodeId": 2, "nodeName": "Sports", "parentId": 1, "parentName": "Root"},
                {"nodeId": 3, "nodeName": "Long jump", "parentId": 2, "parentName": "Sports"},
                {"nodeId": 4, "nodeName": "Archery", "parentId": 2, "parentName": "Sports"},
                {"nodeId": 5, "nodeName": "Zumba", "parentId": 1, "parentName": "Root"}]
    return {"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}


def entry(subset, *labels, duration=60.0):
    return {"subset": subset, "duration": duration, "url": "https://www.youtube.com/watch?v=x",
            "resolution": "640x360",
            "annotations": [{"segment": [1.0 + i, 2.5 + i], "label": lab} for i, lab in enumerate(labels)]}


def test_activitynet_official_format(tmp_path):
    vids = tmp_path / "videos"
    touch(vids / "v_abc-_123.mp4")
    touch(vids / "plainid.mkv")
    touch(vids / "testvid.webm")
    doc = anet_doc(**{"abc-_123": entry("training", "Long jump", "Archery", "Long jump"),
                      "plainid": entry("validation", "Zumba", duration=12.5),
                      "testvid": {"subset": "testing", "duration": 30.0, "url": "", "annotations": []},
                      "gone": entry("training", "Archery")})
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps(doc))
    ds = load_dataset("activitynet", vids, ann)
    assert ds.classes == ("Archery", "Long jump", "Zumba")      # taxonomy leaves, sorted; not "Sports"
    v = {r.id: r for r in ds.videos}
    assert v["abc-_123"] == VideoRecord("abc-_123", vids / "v_abc-_123.mp4", ("Long jump", "Archery"), "training", 60.0)
    assert v["plainid"].path == vids / "plainid.mkv" and v["plainid"].labels == ("Zumba",)
    assert v["plainid"].subset == "validation" and v["plainid"].duration == 12.5
    assert v["testvid"].labels == () and v["testvid"].subset == "testing" and v["testvid"].path == vids / "testvid.webm"
    assert v["gone"].path is None                                # listed, missing: kept for the failure log
    assert [r.id for r in ds.subset("training").videos] == ["abc-_123", "gone"]


def test_activitynet_without_taxonomy_and_writer_round_trip(tmp_path):
    recs = [VideoRecord("a1", None, ("b",), "training", 10.0), VideoRecord("a2", None, ("a",), "validation", 20.0),
            VideoRecord("a3", None, (), "testing", 5.0)]
    segs = {"a1": [(1.0, 2.0, "b"), (3.0, 4.0, "c")], "a2": [(0.5, 1.5, "a")], "a3": [(0, 1, "a")]}
    path = write_activitynet_json(tmp_path / "ann.json", recs, segs)
    doc = json.loads(path.read_text())
    assert doc["database"]["a1"]["annotations"][1] == {"segment": [3.0, 4.0], "label": "c"}
    assert doc["database"]["a3"]["annotations"] == []
    ds = load_dataset("activitynet", tmp_path, path)
    assert ds.classes == ("a", "b", "c")
    assert [(r.id, r.labels, r.subset, r.duration) for r in ds.videos] == [
        ("a1", ("b", "c"), "training", 10.0), ("a2", ("a",), "validation", 20.0), ("a3", (), "testing", 5.0)]
    del doc["taxonomy"]
    path.write_text(json.dumps(doc))
    assert load_dataset("activitynet", tmp_path, path).classes == ("a", "b", "c")   # sorted unique labels


@pytest.mark.parametrize("text, needles", [
    ('{"database": {"a": ', ["invalid JSON"]),
    ('{"version": "1.3"}', ["'database'"]),
    ('{"database": []}', ["'database'"]),
    ('{"database": {"v1": {"duration": 3, "annotations": []}}}', ["'v1'", "subset"]),
    ('{"database": {"v1": {"subset": "train", "annotations": []}}}', ["'v1'", "subset"]),
    ('{"database": {"v1": {"subset": "training", "annotations": [{"segment": [0, 1]}]}}}', ["'v1'", "label"]),
    ('{"database": {"v1": {"subset": "training", "annotations": [{"segment": [2, 1], "label": "x"}]}}}',
     ["'v1'", "segment"]),
    ('{"database": {"v1": {"subset": "training", "duration": "long", "annotations": []}}}', ["'v1'", "duration"]),
    ('{"database": {"v1": {"subset": "training", "annotations": []}, "v1": {"subset": "testing"}}}',
     ["'v1'", "duplicate"]),
    ('{"database": {"../etc/passwd": {"subset": "testing"}}}', ["../etc/passwd", "path"]),
    ('{"database": {"a/b": {"subset": "testing"}}}', ["a/b", "path"]),
    ('{"database": {"v1": "nope"}}', ["'v1'"]),
    ('{"taxonomy": [{"nodeId": 1, "nodeName": "Root", "parentId": null}], '
     '"database": {"v9": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "Golf"}]}}}',
     ["'v9'", "unknown label", "Golf"]),
])
def test_activitynet_malformed(tmp_path, text, needles):
    ann = tmp_path / "bad.json"
    ann.write_text(text)
    one_line_error(lambda: load_dataset("activitynet", tmp_path, ann), "bad.json", *needles)


# ------------------------------------------------------------------------------ Kinetics-Sounds
KINETICS_CSV = (
    'label,youtube_id,time_start,time_end,split,is_cc\n'
    '"playing bass guitar",-aBc_12345,14,24,train,0\n'
    'bowling,xyz,0,10,train,1\n'
    '"dribbling basketball",dr1bble,5,15,val,0\n'
    '"abseiling",ab5eil,0,10,train,0\n'
    '"playing poker",pok,3,13,train,0\n'
    'singing,nosuch,0,10,test,0\n'
    '"tapping pen",tap,100,110,val,0\n'
)


def test_kinetics_sounds_csv(tmp_path, caplog):
    vids = tmp_path / "videos"
    touch(vids / "playing bass guitar" / "-aBc_12345_000014_000024.mp4")       # folder with spaces
    touch(vids / "bowling" / "xyz_000000_000010.mp4")
    touch(vids / "val" / "dribbling_basketball" / "dr1bble_000005_000015.mp4")  # split folder, underscores
    touch(vids / "tap_000100_000110.mkv")                                         # flat
    touch(vids / "abseiling" / "ab5eil_000000_000010.mp4")
    csv_path = tmp_path / "kinetics_700_lists" / "train.csv"
    touch(csv_path, KINETICS_CSV.encode())
    caplog.set_level("INFO")
    for ann in (csv_path, csv_path.parent):                                     # a file or a folder of CSVs
        ds = load_dataset("kinetics-sounds", vids, ann)
        assert ds.classes == KINETICS_SOUNDS_CLASSES and len(ds.classes) == 31
        assert ds.skipped == 2                                                  # abseiling, playing poker
        got = {r.id: (r.labels, r.subset, r.path and r.path.relative_to(vids).as_posix(), r.duration)
               for r in ds.videos}
        assert got == {
            "-aBc_12345_000014_000024": (("playing bass guitar",), "training",
                                         "playing bass guitar/-aBc_12345_000014_000024.mp4", 10.0),
            "xyz_000000_000010": (("bowling",), "training", "bowling/xyz_000000_000010.mp4", 10.0),
            "dr1bble_000005_000015": (("dribbling basketball",), "validation",
                                      "val/dribbling_basketball/dr1bble_000005_000015.mp4", 10.0),
            "nosuch_000000_000010": (("singing",), "testing", None, 10.0),
            "tap_000100_000110": (("tapping pen",), "validation", "tap_000100_000110.mkv", 10.0),
        }
    assert "ignored 2 rows" in caplog.text
    for name in ("dribbling basketball", "blowing out candles", "mowing lawn", "stomping grapes"):
        assert name in KINETICS_SOUNDS_CLASSES


HEADER = "label,youtube_id,time_start,time_end,split\n"


@pytest.mark.parametrize("body, needles", [
    ('label,youtube_id,time_start,split\nbowling,a,0,train\n', ["line 1", "time_end"]),
    (HEADER + 'bowling,a,0,10\n', ["line 2", "fields"]),
    (HEADER + 'playing bass guitar,a,0,10,train\n"singing,b,0,10,train\n', ["line"]),
    (HEADER + 'bowling,a,zero,10,train\n', ["line 2", "time_start"]),
    (HEADER + 'bowling,a,0,10,holdout\n', ["line 2", "holdout"]),
    (HEADER + 'bowling,a,0,10,train\nbowling,a,0,10,val\n', ["line 3", "a_000000_000010", "twice"]),
    (HEADER + 'bowling,../x,0,10,train\n', ["line 2", "../x"]),
    (HEADER + 'bowling,a/b,0,10,train\n', ["line 2", "a/b"]),
    (HEADER + 'bowling,,0,10,train\n', ["line 2"]),
    (HEADER + ',a,0,10,train\n', ["line 2", "label"]),
    (HEADER + 'bowling,a,10,5,train\n', ["line 2", "time_end"]),
])
def test_kinetics_sounds_malformed(tmp_path, body, needles):
    ann = touch(tmp_path / "k.csv", body.encode())
    one_line_error(lambda: load_dataset("kinetics-sounds", tmp_path, ann), "k.csv", *needles)


# -------------------------------------------------------------------------------------- UCF-101
CLASS_IND = "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n"
TRAIN = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
         "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n"
         "YoYo/v_YoYo_g09_c02.avi 3\r\n\r\n")
TEST = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nHandstandPushups/v_HandStandPushups_g01_c02.avi\r\n"


def ucf_lists(d: Path, train=TRAIN, test=TEST, class_ind=CLASS_IND) -> Path:
    touch(d / "classInd.txt", class_ind.encode())
    touch(d / "trainlist01.txt", train.encode())
    touch(d / "testlist01.txt", test.encode())
    return d


def test_ucf101_lists(tmp_path):
    vids = tmp_path / "UCF-101"
    touch(vids / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    touch(vids / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    touch(vids / "handstandpushups" / "x.txt")          # a stray folder in another case is not picked
    touch(vids / "HandstandPushups" / "v_HandstandPushups_g01_c02.AVI")  # a copy that spells it differently
    touch(vids / "v_YoYo_g09_c02.avi")                  # flat copy
    lists = ucf_lists(tmp_path / "ucfTrainTestlist")
    ds = load_dataset("ucf101", vids, lists / "classInd.txt")
    assert ds.classes == ("ApplyEyeMakeup", "HandstandPushups", "YoYo")
    got = [(r.id, r.labels[0], r.subset, r.path and r.path.relative_to(vids).as_posix()) for r in ds.videos]
    assert got == [
        ("v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup", "training", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"),
        ("v_HandStandPushups_g08_c01", "HandstandPushups", "training",
         "HandstandPushups/v_HandStandPushups_g08_c01.avi"),
        ("v_YoYo_g09_c02", "YoYo", "training", "v_YoYo_g09_c02.avi"),
        ("v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup", "testing", None),
        ("v_HandStandPushups_g01_c02", "HandstandPushups", "testing",
         "HandstandPushups/v_HandstandPushups_g01_c02.AVI"),
    ]
    assert {r.subset for r in ds.videos} == {"training", "testing"}   # no validation list in UCF-101
    touch(lists / "trainlist02.txt", b"YoYo/v_YoYo_g01_c01.avi 3\n")
    touch(lists / "testlist02.txt", b"YoYo/v_YoYo_g02_c01.avi\n")
    ds2 = get_adapter("ucf101")(vids, lists, split=2)
    assert [(r.id, r.subset) for r in ds2.videos] == [("v_YoYo_g01_c01", "training"), ("v_YoYo_g02_c01", "testing")]


@pytest.mark.parametrize("kw, needles", [
    (dict(train="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n"), ["trainlist01.txt", "line 1", "disagrees"]),
    (dict(train="Golf/v_Golf_g08_c01.avi 1\n"), ["trainlist01.txt", "line 1", "Golf"]),
    (dict(train="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n"), ["trainlist01.txt", "line 1"]),
    (dict(train="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 9\n"), ["trainlist01.txt", "line 1", "9"]),
    (dict(train="../ApplyEyeMakeup/v_A_g08_c01.avi 1\n"), ["trainlist01.txt", "line 1"]),
    (dict(train="ApplyEyeMakeup/../../etc.avi 1\n"), ["trainlist01.txt", "line 1", ".."]),
    (dict(test="YoYo/v_YoYo_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n"), ["testlist01.txt", "line 2", "twice"]),
    (dict(test="YoYo/notes.txt\n"), ["testlist01.txt", "line 1", "notes.txt"]),
    (dict(class_ind="1 ApplyEyeMakeup\n3 YoYo\n"), ["classInd.txt", "1..N"]),
    (dict(class_ind="1 ApplyEyeMakeup\n1 YoYo\n"), ["classInd.txt", "line 2", "twice"]),
    (dict(class_ind="ApplyEyeMakeup 1\n"), ["classInd.txt", "line 1"]),
])
def test_ucf101_malformed(tmp_path, kw, needles):
    lists = ucf_lists(tmp_path / "lists", **kw)
    one_line_error(lambda: load_dataset("ucf101", tmp_path, lists), *needles)


def test_ucf101_missing_list_files(tmp_path):
    one_line_error(lambda: load_dataset("ucf101", tmp_path, tmp_path), "classInd.txt")
    touch(tmp_path / "classInd.txt", CLASS_IND.encode())
    one_line_error(lambda: load_dataset("ucf101", tmp_path, tmp_path), "trainlist01.txt", "not found")


# -------------------------------------------------------------------------------- Mini-Sports1M
def long_video(path: Path, seconds: int) -> Path:
    """A real mp4 of ``seconds`` (1 fps, 16x16): enough for PyAV's container duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=1)
        s.width = s.height = 16
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        img = np.zeros((16, 16, 3), np.uint8)
        for i in range(seconds):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def sports(tmp_path_factory):
    root = tmp_path_factory.mktemp("sports")
    vids = root / "videos"
    lens = {}
    # class 0 "boomerang": 5 good training videos, one too short, one too long, one missing; 2 test
    for i in range(5):
        lens[f"bmTrain{i}"] = 130 + 30 * i
    lens.update(bmShort=60, bmLong=400, bmTest0=200, bmTest1=150)
    # class 2 "archery": 2 good training videos (fewer than asked), 1 test
    lens.update(arTrain0=240, arTrain1=121, arTest0=299)
    for vid, n in lens.items():
        long_video(vids / f"{vid}.mp4", n)
    lists = root / "sports-1m-dataset"
    touch(lists / "labels.txt", "boomerang\ncycling\narchery\nmodel aircraft\n".encode())
    train = [f"https://www.youtube.com/watch?v=bmTrain{i} 0" for i in range(5)]
    train += ["https://www.youtube.com/watch?v=bmShort 0", "https://www.youtube.com/watch?v=bmLong 0,3",
              "https://www.youtube.com/watch?v=bmMissing 0", "https://www.youtube.com/watch?v=arTrain0 2,1",
              "arTrain1 2", "https://www.youtube.com/watch?v=cyGone 1"]
    test = ["https://www.youtube.com/watch?v=bmTest0 0", "https://youtu.be/bmTest1 0,1",
            "https://www.youtube.com/watch?v=arTest0 2"]
    touch(lists / "original" / "train_partition.txt", ("\n".join(train) + "\n").encode())
    touch(lists / "original" / "test_partition.txt", ("\r\n".join(test) + "\r\n").encode())
    return root, vids, lists, lens


def test_mini_sports1m_selects_by_duration_and_seed(sports, tmp_path):
    root, vids, lists, lens = sports
    split = tmp_path / "split.json"
    ds = get_adapter("mini-sports1m")(vids, lists, train_per_class=3, test_per_class=1, split_file=split)
    assert ds.classes == ("boomerang", "archery")                 # classes with chosen videos, labels.txt order
    train = [r for r in ds.videos if r.subset == "training"]
    test = [r for r in ds.videos if r.subset == "testing"]
    assert sum(r.labels == ("boomerang",) for r in train) == 3 and sum(r.labels == ("archery",) for r in train) == 2
    assert sum(r.labels == ("boomerang",) for r in test) == 1 and sum(r.labels == ("archery",) for r in test) == 1
    for r in ds.videos:
        assert 120 <= r.duration <= 300 and r.path == vids / f"{r.id}.mp4"
        assert r.duration == pytest.approx(lens[r.id], abs=1.01)
    assert not {"bmShort", "bmLong", "bmMissing"} & {r.id for r in ds.videos}
    doc = json.loads(split.read_text())
    assert doc["seed"] == 0 and len(doc["videos"]) == len(ds.videos)

    # Reproducible: read back even when the videos directory has changed since.
    long_video(vids / "extra.mp4", 150)
    (vids / "extra.mp4").rename(vids / "bmExtra.mp4")
    assert get_adapter("mini-sports1m")(vids, lists, train_per_class=3, test_per_class=1, split_file=split) == ds
    (vids / "bmExtra.mp4").unlink()
    # Same seed from scratch: same choice; another seed: another choice of boomerang's 3 of 5.
    again = get_adapter("mini-sports1m")(vids, lists, train_per_class=3, test_per_class=1,
                                         split_file=tmp_path / "again.json")
    assert again == ds
    picks = set()
    for seed in range(1, 6):
        other = get_adapter("mini-sports1m")(vids, lists, seed=seed, train_per_class=3, test_per_class=1,
                                             split_file=tmp_path / f"s{seed}.json")
        picks.add(tuple(sorted(r.id for r in other.videos if r.id.startswith("bmTrain"))))
    assert len(picks) > 1
    one_line_error(lambda: get_adapter("mini-sports1m")(vids, lists, seed=3, train_per_class=3, test_per_class=1,
                                                        split_file=split), "split.json", "seed")


def test_mini_sports1m_json_lists_and_default_split_file(sports, tmp_path):
    _, vids, lists, _ = sports
    d = tmp_path / "json"
    touch(d / "labels.txt", (lists / "labels.txt").read_bytes())
    touch(d / "sports1m_train.json", json.dumps([{"id": "arTrain0", "label487": [2]},
                                                  {"id": "https://www.youtube.com/watch?v=bmShort", "label487": [0]},
                                                  {"id": "arTrain1", "labels": [2, 0]}]).encode())
    touch(d / "sports1m_test.json", json.dumps([{"id": "arTest0", "label487": [2]}]).encode())
    ds = load_dataset("mini-sports1m", vids, d)
    assert ds.classes == ("archery",)
    assert sorted((r.id, r.subset) for r in ds.videos) == [("arTest0", "testing"), ("arTrain0", "training"),
                                                            ("arTrain1", "training")]
    assert (d / "mini-sports1m-seed0.json").is_file()


@pytest.mark.parametrize("train, needles", [
    ("https://www.youtube.com/watch?v=a1 7\n", ["line 1", "0..3"]),
    ("https://www.youtube.com/watch?v=a1 x\n", ["line 1", "integers"]),
    ("https://www.youtube.com/watch?v=a1 0\nhttps://www.youtube.com/watch?v=a1 1\n", ["line 2", "twice"]),
    ("https://www.youtube.com/watch?list=abc 0\n", ["line 1", "no YouTube video id"]),
    ("../../etc/passwd 0\n", ["line 1", "path"]),
    ("https://www.youtube.com/watch?v=a1\n", ["line 1", "URL label"]),
])
def test_mini_sports1m_malformed(tmp_path, train, needles):
    touch(tmp_path / "labels.txt", b"a\nb\nc\nd\n")
    touch(tmp_path / "train_partition.txt", train.encode())
    touch(tmp_path / "test_partition.txt", b"")
    one_line_error(lambda: load_dataset("mini-sports1m", tmp_path, tmp_path), "train_partition.txt", *needles)

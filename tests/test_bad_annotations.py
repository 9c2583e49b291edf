"""Bad annotations (issue 7): invalid JSON, a missing ``database`` or ``subset``, labels outside
the taxonomy, ids with path characters.  ``l2l extract`` stops before touching anything with one
clear line naming the file (and the entry); nothing is written anywhere, not even the store.  And
should a hostile id reach the pipeline some other way, it is only ever a key inside the store:
nothing is written outside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.datasets.base import Dataset, VideoRecord
from l2l.pipeline.extract import extract, plan_stages
from l2l.store import export_store, open_store
from helpers import write_video as _write_video

REPO = Path(__file__).resolve().parents[1]


def _entry(label="Run", subset="training"):
    e = {"duration": 1.0, "url": "", "annotations": [{"segment": [0.0, 1.0], "label": label}]}
    if subset is not None:
        e["subset"] = subset
    return e


TAXONOMY = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
            {"nodeId": 1, "nodeName": "Run", "parentId": 0, "parentName": "Root"},
            {"nodeId": 2, "nodeName": "Swim", "parentId": 0, "parentName": "Root"}]


def _doc(db, taxonomy=TAXONOMY):
    return json.dumps({"version": "VERSION 1.3", "taxonomy": taxonomy, "database": db})


# name -> (annotation text, pattern the one-line error must contain)
CASES = {
    "invalid_json": ('{"version": "VERSION 1.3", "database": {"ok": ', "invalid JSON: "),
    "not_json_at_all": ("\x00\x01binary", "invalid JSON"),
    "no_database": (json.dumps({"version": "VERSION 1.3", "taxonomy": TAXONOMY}),
                    "no 'database' object at the top level"),
    "database_not_object": (json.dumps({"database": ["ok"]}), "no 'database' object at the top level"),
    "no_subset": (_doc({"ok": _entry(), "bad": _entry(subset=None)}),
                  "video 'bad': 'subset' is None, expected one of training, validation, testing"),
    "unknown_subset": (_doc({"bad": _entry(subset="train")}), "video 'bad': 'subset' is 'train'"),
    "label_outside_taxonomy": (_doc({"ok": _entry(), "bad": _entry(label="Fly")}),
                               "video 'bad': unknown label 'Fly' (not a taxonomy leaf)"),
    "label_is_inner_node": (_doc({"bad": _entry(label="Root")}), "unknown label 'Root'"),
    "id_dotdot_slash": (_doc({"../../escape": _entry()}), "video id '../../escape' contains path characters"),
    "id_dotdot": (_doc({"..": _entry()}), "video id '..' contains path characters"),
    "id_absolute": (_doc({"/etc/passwd": _entry()}), "video id '/etc/passwd' contains path characters"),
    "id_backslash": (_doc({"..\\..\\escape": _entry()}), "contains path characters"),
    "id_nul": (_doc({"a\x00b": _entry()}), "contains path characters"),
    "id_empty": (_doc({"": _entry()}), "video id '' is not a non-empty string"),
}


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.fixture
def videos(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    _write_video(vids / "v_ok.mp4", frames=20)
    return vids


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_activitynet_file_is_one_clear_line_and_writes_nothing(tmp_path, videos, case):
    text, expected = CASES[case]
    ann = tmp_path / "anno.json"
    ann.write_text(text)
    store = tmp_path / "store"
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(videos),
                                  "--annotations", str(ann), "--store", str(store), "--no-progress",
                                  "--device", "cpu"])
    assert r.exit_code != 0 and r.exception is not None and isinstance(r.exception, SystemExit)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {ann}: "), r.output
    assert expected in lines[0], lines[0]
    assert not store.exists()
    assert _snapshot(tmp_path) == before                       # nothing written anywhere


def test_kinetics_csv_with_a_path_id_is_refused(tmp_path, videos):
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   "playing piano,abc,0,10,train\n"
                   "playing piano,../../escape,0,10,train\n")
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(main, ["extract", "--dataset", "kinetics-sounds", "--videos", str(videos),
                                  "--annotations", str(csv), "--store", str(tmp_path / "store"),
                                  "--no-progress"])
    assert r.exit_code != 0
    assert r.output.strip().splitlines() == [
        f"Error: {csv}: line 3: video id '../../escape' contains path characters"]
    assert _snapshot(tmp_path) == before


def test_hostile_ids_that_bypass_the_adapters_stay_keys_inside_the_store(tmp_path, videos):
    """A data set built in code (no adapter checks) with ids full of path characters: each is
    stored under its id as a key; no file appears outside the store (or the export)."""
    hostile = ["../../escape", "/tmp/abs", "a/../../b", "..", "x\\..\\y"]
    ds = Dataset(name="hostile", classes=("Run",),
                 videos=tuple(VideoRecord(id=v, path=videos / "v_ok.mp4", labels=("Run",),
                                          subset="training") for v in hostile))
    work = tmp_path / "work"
    work.mkdir()
    store, export = work / "deep" / "store", work / "deep" / "export.h5"
    outside = {"tmp": _snapshot(tmp_path), "abs": sorted(Path("/tmp").glob("abs*"))}
    s = extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    assert (s.done, s.failed) == (len(hostile), 0)
    st = open_store(store)
    assert st.ids() == sorted(hostile) and st.verify() == []
    export_store(st, export, "hdf5")
    r = CliRunner().invoke(main, ["store", "repair", str(store)])
    assert r.exit_code == 0 and "dropped 0 video(s)" in r.output
    # everything new lies inside work/deep/store*, work/deep/export.h5*
    new = set(_snapshot(tmp_path)) - set(outside["tmp"])
    strays = [p for p in new if not (p.startswith("work/deep/store") or p.startswith("work/deep/export.h5")
                                     or p in ("work/deep",))]
    assert strays == []
    assert sorted(Path("/tmp").glob("abs*")) == outside["abs"]
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
    frames = open_store(export).read_many(["frames"]).arrays["frames"]
    per_video = frames.reshape(len(hostile), 2, 112, 112, 3)     # the same 20-frame file each time
    assert all(np.array_equal(v, per_video[0]) for v in per_video)

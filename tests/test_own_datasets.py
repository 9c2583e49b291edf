"""One's own videos: ``--dataset folder`` (one sub-folder per class) and ``--dataset csv`` (a
list of files with optional trims); names with spaces and non-ASCII characters; malformed input
refused in one line naming the row; and both run extract, train-student, extract --student,
train-skim and evaluate end to end through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import write_video
from l2l.cli.main import main
from l2l.datasets import AnnotationError, load_dataset
from l2l.core.media import read_frames
from l2l.stages.decode import DecodeConfig, Part, decode_video
from l2l.store import open_store

CLASSES = ("Dog barking", "Zoë sings")          # a space; a non-ASCII letter


def _tree(root: Path, per_class: int = 3, frames: int = 24) -> Path:
    """``root/<class>/clip <i>.mp4`` (and a non-video file, a hidden file) per class."""
    for c, cls in enumerate(CLASSES):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            write_video(d / f"clip {i} é.mp4", frames=frames, size=(32, 24),
                        tone_hz=300.0 + 500 * c + 20 * i)
        (d / "notes.txt").write_text("not a video")
        (d / ".hidden.mp4").write_bytes(b"")
    return root


def test_folder_classes_ids_and_seeded_split(tmp_path):
    root = _tree(tmp_path / "videos", per_class=5, frames=2)
    ds = load_dataset("folder", root, None)
    assert ds.classes == CLASSES and len(ds.videos) == 10 and ds.skipped == 0
    v = next(v for v in ds.videos if v.id == "Zoë sings__clip 3 é")
    assert v.labels == ("Zoë sings",) and v.path == root / "Zoë sings" / "clip 3 é.mp4"
    per = {c: sorted(v.subset for v in ds.videos if v.labels == (c,)) for c in CLASSES}
    assert all(s == ["training"] * 4 + ["validation"] for s in per.values())       # 0.2 of 5
    assert ds.split == {"kind": "seeded", "seed": 0, "val_fraction": 0.2}
    again = load_dataset("folder", root, None)
    other = load_dataset("folder", root, None, seed=1, val_fraction=0.4)
    assert again == ds
    assert sum(v.subset == "validation" for v in other.videos) == 4
    val = {v.id for v in ds.videos if v.subset == "validation"}
    assert any({v.id for v in load_dataset("folder", root, None, seed=s).videos
                if v.subset == "validation"} != val for s in (1, 2, 3))       # the seed matters


def test_folder_lists_and_their_errors(tmp_path):
    root = _tree(tmp_path / "videos", per_class=2, frames=2)
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("# mine\nDog barking/clip 0 é.mp4\n./Zoë sings/clip 0 é.mp4\n\n", encoding="utf-8")
    val.write_text("Zoë sings/clip 1 é.mp4\n", encoding="utf-8")
    ds = load_dataset("folder", root, None, train_list=str(train), val_list=str(val))
    assert [(v.id, v.subset) for v in ds.videos] == [
        ("Dog barking__clip 0 é", "training"), ("Zoë sings__clip 0 é", "training"),
        ("Zoë sings__clip 1 é", "validation")]
    assert ds.skipped == 1 and ds.split["kind"] == "lists"
    val.write_text("Zoë sings/clip 1 é.mp4\nCat/nope.mp4\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"val\.txt: line 2: 'Cat/nope\.mp4' is not a video"):
        load_dataset("folder", root, None, train_list=str(train), val_list=str(val))
    val.write_text("Dog barking/clip 0 é.mp4\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="also in the training list"):
        load_dataset("folder", root, None, train_list=str(train), val_list=str(val))
    with pytest.raises(AnnotationError, match="no class sub-folder holds a video"):
        load_dataset("folder", tmp_path / "videos" / "Dog barking", None)


def _csv(path: Path, rows: list[str], header: str = "path,label,subset,id,start,end") -> Path:
    path.write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return path


def test_csv_rows_trims_and_names(tmp_path):
    root = _tree(tmp_path / "videos", per_class=2, frames=2)
    ann = _csv(tmp_path / "list.csv", [
        '"Dog barking/clip 0 é.mp4",Dog barking,train,,,',
        '"Zoë sings/clip 1 é.mp4",Zoë sings,validation,zoe1,0.5,1.5',
        'missing.mp4,Zoë sings,test,,,'])
    ds = load_dataset("csv", root, ann)
    assert ds.classes == ("Dog barking", "Zoë sings")
    a, b, c = ds.videos
    assert (a.id, a.subset, a.start, a.end) == ("Dog barking__clip 0 é", "training", None, None)
    assert (b.id, b.subset, b.start, b.end, b.duration) == ("zoe1", "validation", 0.5, 1.5, 1.0)
    assert c.path is None and c.subset == "testing"


@pytest.mark.parametrize("rows,needle", [
    (['a.mp4,x,train,,,', 'b.mp4,x,sometimes,,,'], r"list\.csv: line 3: subset 'sometimes'"),
    (['a.mp4,x,train,,abc,'], r"list\.csv: line 2: start 'abc' is not a number"),
    (['a.mp4,x,train,,2,1'], r"list\.csv: line 2: end 1 s is not after start 2 s"),
    (['a.mp4,x,train,,,', 'a.mp4,y,train,,,'], r"list\.csv: line 3: id 'a' is listed twice"),
    (['a.mp4,x'], r"list\.csv: line 2: 2 fields, the header has 6"),
    (['a.mp4,x,train,../up,,'], r"list\.csv: line 2: video id '\.\./up' contains path"),
])
def test_csv_malformed_row_is_one_line_naming_it(tmp_path, rows, needle):
    ann = _csv(tmp_path / "list.csv", rows)
    with pytest.raises(AnnotationError, match=needle) as e:
        load_dataset("csv", tmp_path, ann)
    assert "\n" not in str(e.value)
    bad = _csv(tmp_path / "h.csv", ["a.mp4,x"], header="file,label")
    with pytest.raises(AnnotationError, match=r"h\.csv: line 1: .* lacks column\(s\) path, subset"):
        load_dataset("csv", tmp_path, bad)


def test_a_trim_is_that_part_of_the_file(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=90, size=(32, 24))          # 3 s, 30 fps
    whole = decode_video(path)
    part = decode_video(Part(path, 0.5, 2.0))
    assert part["frame_index"].tolist() == [15, 31, 47]              # 0.5 + k 16/30 s, up to 2 s
    assert np.allclose(part["times"], 0.5 + np.arange(3) * 16 / 30)
    assert part["duration"] == pytest.approx(1.5)
    assert np.array_equal(part["frames"], read_frames(path, [15, 31, 47]))
    assert len(whole["times"]) == 6
    # no sound past the end: the window at 1.567 s is zero from 2.0 s on
    w = part["waveform"][2]
    cut = int(round((2.0 - part["times"][2]) * 16000))
    assert np.abs(w[:cut - 200]).max() > 0.2 and np.all(w[cut:] == 0)
    grid = decode_video(Part(path, 0.5, 2.0), DecodeConfig(grid="frames"))
    assert grid["frame_index"].tolist() == [15, 31, 47]


def _run(args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, (args[0], r.output, r.exception)
    return r.output


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_own_data_set_end_to_end(tmp_path, kind, one_torch_thread):
    root = _tree(tmp_path / "videos", per_class=3, frames=24)
    src = ["--dataset", kind, "--videos", root]
    if kind == "csv":
        rows = [f'"{c}/clip {i} é.mp4",{c},{"validation" if i == 2 else "train"},,'
                f'{"0.1" if i == 1 else ""},' for c in CLASSES for i in range(3)]
        src += ["--annotations", _csv(tmp_path / "own list.csv", rows)]
    else:
        src += ["--dataset-option", "val_fraction=0.34"]
    store = tmp_path / "store"
    out = _run(["extract", *src, "--store", store, "--device", "cpu", "--no-progress"])
    st = open_store(store)
    assert sorted(st.ids()) == sorted(f"{c}__clip {i} é" for c in CLASSES for i in range(3)), out
    assert st.info()["classes"] == list(CLASSES)
    if kind == "folder":
        assert st.info()["split"] == {"kind": "seeded", "seed": 0, "val_fraction": 0.34}
    else:                                    # the trimmed clips start at 0.1 s
        assert st.read(f"{CLASSES[0]}__clip 1 é", ["times"])["times"][0] == pytest.approx(0.1)
    _run(["train-student", "--store", store, "--out", tmp_path / "student", "--objective",
          "classify", "--epochs", "1", "--max-moments", "4", "--batch-size", "4", "--device",
          "cpu", "--no-progress", "--subset", "training", "--image-weights", "random",
          "--audio-weights", "random"])
    _run(["extract", *src, "--store", store, "--student", tmp_path / "student", "--device",
          "cpu", "--no-progress"])
    _run(["train-skim", "--store", store, "--out", tmp_path / "skim", "--student",
          tmp_path / "student", "--epochs", "2", "--min-steps", "0", "--device", "cpu",
          "--no-progress"])
    _run(["evaluate", "--store", store, "--checkpoint", tmp_path / "skim", "--subset",
          "validation", "--out", tmp_path / "eval", *src, "--device", "cpu", "--no-progress"])
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["num_videos"] == m["num_listed"] == 2 and m["dataset"] == kind


def test_only_folder_goes_without_annotations(tmp_path):
    r = CliRunner().invoke(main, ["extract", "--dataset", "csv", "--videos", str(tmp_path),
                                  "--store", str(tmp_path / "s"), "--no-progress"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        "Error: --dataset csv needs --annotations (only folder reads none)"], r.output
    assert not (tmp_path / "s").exists()

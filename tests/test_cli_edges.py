"""The edges a hostile user finds, driven through the CLI (issue 21): each gives one line naming
the file (or option) and the reason with exit 1, or succeeds; nothing partial is left behind; and
the next run succeeds once the cause is gone.  (The store-level edges, a full disk, read-only
stores and concurrent creation, are tested with the store.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.models.skim import load_skim
from l2l.models.students import build_student, save_student
from l2l.store import open_store
from helpers import write_video
from test_cli import _annotations, one_error_line
from test_train_skim import small_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    vids = root / "videos"
    vids.mkdir()
    write_video(vids / "v_a.mp4", frames=32)
    write_video(vids / "v_b.mp4", frames=32, tone_hz=880.0)
    ann = _annotations(root / "ann.json", {"a": ("Run", "training"), "b": ("Swim", "validation")})
    return {"root": root, "videos": vids, "ann": ann}


def _extract(videos, ann, store, *more):
    return ["extract", "--dataset", "activitynet", "--videos", videos, "--annotations", ann,
            "--store", store, "--device", "cpu", "--no-progress", *more]


def ok(args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def _verified(store: Path, n: int) -> None:
    out = ok(["store", "verify", store])
    assert f"OK ({n} videos verified)" in out, out


# ---- input checked before anything is written ----------------------------------------------
def test_a_missing_or_mistyped_videos_folder_stops_before_anything_is_written(media, tmp_path):
    store = tmp_path / "s.zarr"
    missing = media["root"] / "vidoes"
    one_error_line(_extract(missing, media["ann"], store), str(missing), "no such videos folder")
    assert not store.exists()
    empty = tmp_path / "elsewhere"                 # a folder, but not the one holding the videos
    empty.mkdir()
    one_error_line(_extract(empty, media["ann"], store), "none of the 2 videos", str(empty))
    assert not store.exists()
    ok(_extract(media["videos"], media["ann"], store))          # the cause gone: it runs
    _verified(store, 2)


@pytest.mark.parametrize("bad_id, reason", [("x" * 300, "300 bytes long"),
                                            ("a\nb", "control characters")])
def test_hostile_video_ids_are_refused_up_front(media, tmp_path, bad_id, reason):
    ann = _annotations(tmp_path / "ann.json", {"a": ("Run", "training"), bad_id: ("Swim", "training")})
    store = tmp_path / "s.zarr"
    line = one_error_line(_extract(media["videos"], ann, store), str(ann), reason)
    assert "\n" not in line
    assert not store.exists()
    _annotations(ann, {"a": ("Run", "training"), "b": ("Swim", "training")})
    ok(_extract(media["videos"], ann, store))
    _verified(store, 2)


def test_device_cuda_without_a_gpu_is_one_line_and_leaves_no_store(media, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)    # (also on a GPU machine)
    torch.manual_seed(0)
    ck = tmp_path / "student.pt"
    save_student(build_student(num_classes=2), ck, config={}, classes=["Run", "Swim"])
    store = tmp_path / "s.zarr"
    args = _extract(media["videos"], media["ann"], store, "--student", ck)
    args[args.index("--device") + 1] = "cuda"
    one_error_line(args, "--device cuda", "torch sees no CUDA device")
    assert not store.exists()
    ok(_extract(media["videos"], media["ann"], store))
    one_error_line(["train-student", "--store", store, "--out", tmp_path / "st", "--device", "cuda"],
                   "torch sees no CUDA device")
    assert not (tmp_path / "st").exists()


def test_the_old_features_spelling_works_on_every_command(media, tmp_path):
    store = tmp_path / "s.zarr"
    ok(["extract", "--dataset", "activitynet", "--videos", media["videos"], "--annotations",
        media["ann"], "--features", store, "--device", "cpu", "--no-progress"])
    _verified(store, 2)
    r = CliRunner().invoke(main, ["train-student", "--features", str(store), "--help"])
    assert r.exit_code == 0 and "--features" in r.output


# ---- what a run does is what was asked, or it says so at its start -------------------------
@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return small_store(tmp_path_factory.mktemp("feat") / "f.zarr").path


def test_train_skim_honours_typed_epochs_or_says_what_it_changed(features, tmp_path):
    base = ["train-skim", "--store", features, "--crop", "10", "20", "--steps", "3",
            "--device", "cpu", "--no-progress"]
    r = CliRunner().invoke(main, [str(a) for a in base + ["--out", tmp_path / "a",
                                                                           "--epochs", "2"]])
    assert r.exit_code == 0, r.output
    _, ck = load_skim(tmp_path / "a")
    assert ck["plan"]["epochs"] == 2, ck["plan"]
    r = CliRunner().invoke(main, [str(a) for a in base + [
        "--out", tmp_path / "b", "--epochs", "2", "--min-steps", "40"]])
    assert r.exit_code == 0, r.output
    _, ck = load_skim(tmp_path / "b")
    first = r.stderr.strip().splitlines()[0]
    assert ck["plan"]["epochs"] > 2 and f"epochs 2 -> {ck['plan']['epochs']}" in first, r.stderr
    assert "min_steps 40" in first


# ---- output in the paper's unit and for people --------------------------------------------
def test_store_info_gflops_are_multiply_adds_and_commit_prints_a_summary(features, tmp_path):
    st = open_store(features)
    st.update_info({"flops_per_moment": {"image_trunk": 2_197_000_000}})   # torch's count
    out = ok(["store", "info", features])
    line = next(x for x in out.splitlines() if x.startswith("cost"))
    assert "1.099 GFLOPs per moment (multiply-adds)" in line, line
    out = ok(["store", "commit", features]).strip()
    assert out == f"{features}: nothing staged to commit"
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_a_damaged_chunk_met_by_train_skim_is_named_without_a_wrong_hint(tmp_path):
    store = small_store(tmp_path / "f.zarr").path
    chunks = sorted(p for p in Path(store).rglob("*") if p.is_file() and "/image/c/" in str(p))
    assert chunks, "no chunk files of the image array"
    raw = bytearray(chunks[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunks[0].write_bytes(bytes(raw))
    line = one_error_line(["train-skim", "--store", store, "--out", tmp_path / "o", "--crop", "10",
                           "20", "--device", "cpu", "--no-progress"], "damaged chunk")
    assert "l2l extract" not in line and "student features" not in line
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


# ---- a bug is still a bug ------------------------------------------------------------------
def test_an_unexpected_exception_keeps_its_traceback_and_asks_for_a_report(features, monkeypatch):
    import l2l.cli.store_cmds as cmds

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cmds, "_open", broken)
    r = CliRunner().invoke(main, ["store", "info", str(features)])
    assert isinstance(r.exception, ZeroDivisionError)          # the traceback is kept
    assert "please report it with the command line" in r.output

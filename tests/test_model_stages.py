"""Model stages (``stages/model.py``): batches across videos give each video's own numbers on
CPU, the model is loaded once per process, placement (device, precision) is in the cache key
without touching a GPU, and the spectrogram never leaves the CPU."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from l2l.models.students import build_student, save_student
from l2l.models.teacher import teacher
from l2l.stages import model as model_mod
from l2l.stages.features import Features, FeaturesConfig
from l2l.stages.model import PlacementError
from l2l.stages.spectrogram import Spectrogram
from l2l.stages.teacher import TeacherConfig, TeacherStage
from helpers import random_moments as moments


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    m = build_student(num_classes=3)
    m.train()       # non-trivial BN running statistics
    with torch.no_grad():
        m(torch.randint(0, 256, (4, 112, 112, 3), dtype=torch.uint8), torch.randn(4, 101, 40) - 5)
    save_student(m, d / "student.pt", config={}, classes=["a", "b", "c"])
    return d / "student.pt"


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    torch.manual_seed(0)
    w = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(teacher().state_dict(), w)
    return w


def test_features_run_batch_equals_run_per_video_bitwise_on_cpu(checkpoint):
    videos = [moments(s, n) for s, n in ((0, 3), (1, 0), (2, 2), (3, 3))]
    stage = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=2))
    together = stage.run_batch(videos, device="cpu")
    assert [len(o["image"]) for o in together] == [3, 0, 2, 3]
    for v, got in zip(videos, together):
        alone = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=2)).run(v)
        for k in ("image", "audio", "imageaudio"):
            assert got[k].dtype == np.float16 and got[k].shape == (len(v["frames"]), 512)
            assert np.array_equal(got[k], alone[k]), k
    assert not np.array_equal(together[0]["image"][0], together[3]["image"][0])


def test_forward_across_videos_keeps_rows_in_order(checkpoint):
    """The CUDA path's arithmetic (rows of all videos in full, padded batches), run on CPU: each
    video gets its own rows back, equal to its own run within float rounding."""
    videos = [moments(s, n) for s, n in ((4, 3), (5, 0), (6, 4))]
    stage = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=4)).for_device("cpu")
    stage.setup("cpu")
    with torch.inference_mode():
        flat = stage.forward_across(videos, [3, 0, 4], "cpu", 4)
    assert flat["image"].shape == (7, 512) and flat["image"].dtype == np.float16
    ref = np.concatenate([stage.run(v)["imageaudio"] for v in videos])
    assert np.allclose(flat["imageaudio"].astype(np.float32), ref.astype(np.float32), atol=1e-2)
    assert not np.allclose(flat["imageaudio"][:3], flat["imageaudio"][3:6], atol=1e-2)


def test_teacher_run_batch_equals_run_per_video_bitwise_on_cpu(teacher_weights):
    cfg = TeacherConfig(weights=str(teacher_weights), clip_len=4, clip_resize=(40, 48),
                        clip_crop=32, batch_size=2)
    rng = np.random.default_rng(0)
    videos = [{"clips": rng.integers(0, 256, (n, 4, 32, 32, 3), dtype=np.uint8)} for n in (3, 0, 2)]
    together = TeacherStage(cfg).run_batch(videos)
    for v, got in zip(videos, together):
        alone = TeacherStage(cfg).run(v)
        assert got["teacher_logits"].shape == (len(v["clips"]), 400)
        for k in ("teacher", "teacher_logits"):
            assert np.array_equal(got[k], alone[k]), k


def test_model_loaded_once_per_run_across_unpickled_copies(checkpoint, monkeypatch, tmp_path):
    import l2l.models.students as students
    from l2l.pipeline.process import Run
    calls = []
    real = students.load_student
    monkeypatch.setattr(students, "load_student", lambda p: calls.append(p) or real(p))
    stage = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=3)).for_device("cpu")
    a, b = pickle.loads(pickle.dumps(stage)), pickle.loads(pickle.dumps(stage))
    assert a.model is None and b.model is None         # the model is not pickled
    with Run(tmp_path / "store", "cpu") as run:
        run.ensure_setup(a)
        run.ensure_setup(b)
        run.ensure_setup(a)                            # idempotent
        assert len(calls) == 1 and a.model is b.model and len(run.models) == 1
        x = moments(7, 2)
        assert np.array_equal(a.run(x)["image"], b.run(x)["image"]) and len(calls) == 1
    assert a.model is None and b.model is None         # the run's end lets the model go
    # a stage used outside any run loads its own model, once
    c = pickle.loads(pickle.dumps(stage))
    c.run(x)
    c.run(x)
    assert len(calls) == 2


def test_placement_is_in_the_key_and_touches_no_gpu(checkpoint, teacher_weights, monkeypatch):
    def no_cuda(*a, **k):
        raise AssertionError("for_device touched CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", no_cuda)
    monkeypatch.setattr(torch.cuda, "init", no_cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", no_cuda)
    for stage in (Features(FeaturesConfig(checkpoint=str(checkpoint))),
                  TeacherStage(TeacherConfig(weights=str(teacher_weights)))):
        cpu, gpu = stage.for_device("cpu"), stage.for_device("cuda:0")
        gpu32 = type(stage)(type(stage.config)(**{**_init_fields(stage.config),
                                                  "precision": "fp32"})).for_device("cuda")
        assert (cpu.config.device, cpu.config.precision) == ("cpu", "fp32")
        assert (gpu.config.device, gpu.config.precision) == ("cuda", "bf16")
        assert (gpu32.config.device, gpu32.config.precision) == ("cuda", "fp32")
        keys = {s.key({"frames": "f"}) for s in (cpu, gpu, gpu32)}
        assert len(keys) == 3
        assert stage.config.device == "" and gpu.for_device("cuda") is gpu
        assert gpu.config.checkpoint_hash if stage.name == "features" else gpu.config.weights_hash
        with pytest.raises(PlacementError, match="configured for cuda"):
            gpu.run_batch([], device="cpu")
        compiled = type(stage)(type(stage.config)(**{**_init_fields(stage.config), "compile": True}))
        assert compiled.for_device("cpu").config_hash != cpu.config_hash
        assert stage.for_device("cpu").config_hash == cpu.config_hash     # deterministic
    with pytest.raises(ValueError, match="precision must be one of"):
        FeaturesConfig(checkpoint=str(checkpoint), precision="fp8")


def _init_fields(config) -> dict:
    import dataclasses
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}


def test_spectrogram_stays_on_the_cpu_whatever_the_device():
    """The spectrogram is numpy on the CPU (no torch at all): asking for "cuda" changes
    nothing, on a machine without CUDA (where moving anything there would raise) as on one
    with it."""
    w = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32)
    ref = Spectrogram().run({"waveform": w})["logmel"]
    s = Spectrogram()
    s.setup("cuda")
    assert np.array_equal(s.run({"waveform": w}, device="cuda")["logmel"], ref)
    assert not Spectrogram.uses_gpu and Features.uses_gpu and TeacherStage.uses_gpu
    assert Features.batchable and TeacherStage.batchable and not Spectrogram.batchable


def test_extract_with_the_teacher_decodes_once_and_stores_its_numbers(tmp_path, teacher_weights):
    """Through the pipeline: the teacher's options reach decode (``--set`` strings included),
    decode's key does not change, and the stored descriptors are the teacher's on those clips."""
    import json

    from l2l.datasets.base import load_dataset
    from l2l.pipeline.extract import extract, plan_stages
    from l2l.stages.decode import Decode, DecodeConfig
    from l2l.store import open_store
    from helpers import write_video

    vids = tmp_path / "videos"
    vids.mkdir()
    write_video(vids / "v_a.mp4", frames=40, audio_rate=None)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": {"a": {
        "subset": "training", "duration": 1.3, "url": "",
        "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]}}}))
    ds = load_dataset("activitynet", vids, ann)
    opts = {"teacher": {"weights": str(teacher_weights), "clip_len": "4", "clip_resize": "40x48",
                        "clip_crop": "32"}}
    stages = plan_stages(["decode", "spectrogram", "teacher"], opts)
    assert stages[0].config.clip_len == 4 and stages[0].config.clip_resize == (40, 48)
    s = extract(ds, tmp_path / "st", stages=stages, device="cpu", progress=False)
    assert (s.done, s.failed) == (1, 0), s.failures
    st = open_store(tmp_path / "st")
    rec = st.records("a")
    assert rec["frames"].key == Decode().key({"source": rec["frames"].upstream["source"]})
    assert rec["teacher"].config["clip_resize"] in ([40, 48], (40, 48))
    assert rec["teacher"].config["device"] == "cpu" and rec["teacher"].config["precision"] == "fp32"
    got = st.read("a", ["teacher", "teacher_logits"])
    clips = Decode(DecodeConfig(clip_len=4, clip_resize=(40, 48), clip_crop=32)).run(
        {}, source=vids / "v_a.mp4")["clips"]
    want = stages[2].for_device("cpu").run({"clips": clips})
    assert got["teacher"].shape == (3, 512)
    assert np.array_equal(got["teacher"], want["teacher"])
    assert np.array_equal(got["teacher_logits"], want["teacher_logits"])


def test_a_gpu_group_holds_two_forward_passes_a_cpu_group_512_moments(checkpoint):
    from l2l.pipeline.work import BATCH_MOMENTS, _group_moments
    stage = Features(FeaturesConfig(checkpoint=str(checkpoint)))
    assert _group_moments(stage, "cpu") == BATCH_MOMENTS == 512
    assert _group_moments(stage, "cuda") == 2 * stage.gpu_batch == 2048      # touches no GPU
    small = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=128))
    assert _group_moments(small, "cuda:1") == BATCH_MOMENTS                 # two passes < 512
    assert _group_moments(Spectrogram(), "cuda") == BATCH_MOMENTS

"""The features stage (student over stored moments) and the teacher stage (clips -> R(2+1)D-18):
determinism, independence from the other videos, cache keys, and the teacher clip grid."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from l2l.models.students import build_student, save_student
from l2l.models.teacher import normalise_clips, teacher
from l2l.stages.features import Features, FeaturesConfig
from l2l.stages.teacher import TeacherConfig, TeacherStage
from helpers import random_moments as moments


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_student(num_classes=3)
        m.train()       # give BN non-trivial running statistics
        with torch.no_grad():
            m(torch.randint(0, 256, (4, 112, 112, 3), dtype=torch.uint8), torch.randn(4, 101, 40) - 5)
        save_student(m, d / f"s{seed}" / "student.pt", config={"seed": seed}, classes=["a", "b", "c"])
        out.append(d / f"s{seed}")
    return out


def test_features_shapes_and_match_the_model(checkpoints):
    stage = Features(FeaturesConfig(checkpoint=str(checkpoints[0]), batch_size=4))
    x = moments(0, 5)
    out = stage.run(x)
    for k in ("image", "audio", "imageaudio"):
        assert out[k].shape == (5, 512) and out[k].dtype == np.float16
    with torch.no_grad():
        ref = stage.model(torch.from_numpy(x["frames"]), torch.from_numpy(x["logmel"]).float())
    for k in out:
        assert np.allclose(out[k].astype(np.float32), ref[k].numpy(), rtol=2e-3, atol=2e-3), k


def test_features_deterministic_and_independent_of_other_videos(checkpoints):
    a, b = moments(1, 5), moments(2, 3)
    cfg = FeaturesConfig(checkpoint=str(checkpoints[0]), batch_size=4)
    alone = Features(cfg).run(a)
    again = Features(cfg).run(a)               # a fresh process-like load
    many = Features(cfg)
    among = [many.run(v) for v in (b, a)][1]   # after another video, in the same process
    for k in alone:
        assert np.array_equal(alone[k], again[k]), k
        assert np.array_equal(alone[k], among[k]), k
    assert not np.array_equal(alone["image"][0], alone["image"][1])    # not a constant output


def test_features_cache_key_follows_the_checkpoint_content(checkpoints, tmp_path):
    s0 = Features(FeaturesConfig(checkpoint=str(checkpoints[0])))
    s1 = Features(FeaturesConfig(checkpoint=str(checkpoints[1])))
    assert s0.config_hash != s1.config_hash
    assert s0.config_dict()["checkpoint_hash"] in s0.config_dict().values()
    moved = tmp_path / "copy.pt"
    shutil.copy(checkpoints[0] / "student.pt", moved)
    same = Features(FeaturesConfig(checkpoint=str(moved), batch_size=7))
    assert same.config_hash == s0.config_hash             # path and batch size are not the numbers
    # dataclasses.replace (how the pipeline applies --student) re-reads the hash
    swapped = dataclasses.replace(s0.config, checkpoint=str(checkpoints[1]))
    assert swapped.checkpoint_hash == s1.config.checkpoint_hash
    # a checkpoint replaced after the config was made is refused when a run loads it (a run
    # that already holds the model for this hash keeps using it: the right numbers)
    shutil.copy(checkpoints[1] / "student.pt", moved)
    with pytest.raises(ValueError, match="is not the configured"):
        same.setup("cpu")


def test_features_bad_inputs(checkpoints):
    stage = Features(FeaturesConfig(checkpoint=str(checkpoints[0])))
    x = moments(0, 2)
    with pytest.raises(ValueError, match=r"frames must be \(N, 112, 112, 3\) uint8"):
        stage.run({"frames": x["frames"][:, :64], "logmel": x["logmel"]})
    with pytest.raises(ValueError, match="2 frames but 1 log-mel"):
        stage.run({"frames": x["frames"], "logmel": x["logmel"][:1]})
    with pytest.raises(ValueError, match="--student"):
        Features(FeaturesConfig()).setup("cpu")


# ---- teacher stage ----------------------------------------------------------------------------
def test_teacher_stage_outputs_match_the_model(tmp_path):
    torch.manual_seed(0)
    t = teacher()
    w = tmp_path / "teacher.pt"
    torch.save(t.state_dict(), w)
    cfg = TeacherConfig(weights=str(w), clip_len=8, clip_resize=(64, 80), clip_crop=56,
                        batch_size=2)                                   # small: fast on CPU
    stage = TeacherStage(cfg)
    clips = np.random.default_rng(0).integers(0, 256, (3, 8, 56, 56, 3), dtype=np.uint8)
    out = stage.run({"clips": clips})
    assert out["teacher"].shape == (3, 512) and out["teacher"].dtype == np.float16
    assert out["teacher_logits"].shape == (3, 400) and out["teacher_logits"].dtype == np.float16
    with torch.no_grad():
        d, lg = t(normalise_clips(torch.from_numpy(clips)))
    assert np.allclose(out["teacher"], d.numpy(), rtol=2e-3, atol=2e-3)
    assert np.allclose(out["teacher_logits"], lg.numpy(), rtol=2e-3, atol=2e-3)
    assert not np.array_equal(out["teacher"][0], out["teacher"][1])
    assert cfg.weights_hash not in ("", "random", "kinetics400_v1")
    assert TeacherStage(TeacherConfig(weights="random")).config_hash != stage.config_hash
    # the clip geometry is the teacher's to hash (decode's key leaves it out) and to ask for
    other = TeacherStage(dataclasses.replace(cfg, clip_resize="64x96"))
    assert other.config.clip_resize == (64, 96) and other.config_hash != stage.config_hash
    assert stage.upstream_options() == {"decode": {"clip_len": 8, "clip_step": 2,
                                                   "clip_resize": (64, 80), "clip_crop": 56}}
    assert TeacherStage(TeacherConfig(weights="random")).upstream_options()["decode"] == {
        "clip_len": 16, "clip_step": 2, "clip_resize": (128, 171), "clip_crop": 112}
    with pytest.raises(ValueError, match=r"clips must be \(N, 8, 56, 56, 3\) uint8"):
        stage.run({"clips": clips[:, :4]})
    with pytest.raises(ValueError, match="does not fit"):
        TeacherConfig(weights="random", clip_crop=200)


def test_teacher_normalisation_is_torchvisions_kinetics_transform():
    """Clips resized to (128, 171) and centre-cropped to 112, then scaled and normalised here,
    are what ``R2Plus1D_18_Weights.KINETICS400_V1.transforms()`` makes of the resized frames."""
    from torchvision.models.video import R2Plus1D_18_Weights
    tf = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    assert list(tf.resize_size) == [128, 171] and list(tf.crop_size) == [112, 112]
    resized = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 4, 128, 171, 3),
                                                                  dtype=np.uint8))
    want = torch.stack([tf(v.permute(0, 3, 1, 2)) for v in resized])     # (B, 3, T, 112, 112)
    top, left = int(round((128 - 112) / 2)), int(round((171 - 112) / 2))  # torchvision's centre
    cropped = resized[:, :, top:top + 112, left:left + 112]
    got = normalise_clips(cropped)
    assert got.shape == want.shape == (2, 3, 4, 112, 112)
    assert torch.allclose(got, want, atol=1e-5)


def test_teacher_reads_the_clips_decode_makes_for_it(make_video, tmp_path):
    """One decode pass, configured by the teacher's ``upstream_options``, feeds the teacher."""
    from l2l.stages.decode import Decode, DecodeConfig
    path = make_video("t.mp4", frames=40, audio_rate=None)
    torch.manual_seed(1)
    t = teacher()
    w = tmp_path / "teacher.pt"
    torch.save(t.state_dict(), w)
    stage = TeacherStage(TeacherConfig(weights=str(w), clip_len=4, clip_resize=(48, 64),
                                       clip_crop=40, batch_size=2))
    decode = Decode(DecodeConfig(**stage.upstream_options()["decode"]))
    assert "clips" in decode.outputs and "clips" in decode.transient
    assert decode.config_hash == Decode().config_hash        # clips never change decode's key
    d = decode.run({}, source=path)
    assert d["clips"].shape == (len(d["times"]), 4, 40, 40, 3) == (3, 4, 40, 40, 3)
    out = stage.run({"clips": d["clips"]})
    with torch.no_grad():
        desc, _ = t(normalise_clips(torch.from_numpy(d["clips"])))
    assert np.allclose(out["teacher"], desc.numpy(), rtol=2e-3, atol=2e-3)

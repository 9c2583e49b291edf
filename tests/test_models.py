"""IMGAUD2VID models: output shapes/dtypes, parameter counts and FLOPs derived here from the layer
shapes (not by calling the model code), checkpoint round trips, and weight-loading errors."""
from __future__ import annotations

import pytest
import torch

from l2l.models.cost import flops, flops_per_moment
from l2l.models.students import (Fusion, WeightsError, audio_trunk, build_student, image_trunk,
                                 load_student, save_student)
from l2l.models.teacher import teacher


# ---- independent arithmetic: ResNet-18 and R(2+1)D-18 from their published layer tables -------
def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def resnet18_body(in_ch, h, w, conv1_stride=2):
    """(parameters, MACs, final h, final w) of ResNet-18 up to layer4 (no fc), from its layer
    table: 7x7 stem, 3x3/2 max pool, four stages of two basic blocks (64, 128, 256, 512)."""
    params = in_ch * 64 * 49 + 2 * 64
    h, w = conv_out(h, 7, conv1_stride, 3), conv_out(w, 7, conv1_stride, 3)
    macs = h * w * 64 * in_ch * 49
    h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    c = 64
    for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            h2, w2 = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
            params += c * out * 9 + 2 * out + out * out * 9 + 2 * out
            macs += h2 * w2 * out * c * 9 + h2 * w2 * out * out * 9
            if s != 1 or c != out:            # 1x1 projection shortcut + its BN
                params += c * out + 2 * out
                macs += h2 * w2 * out * c
            h, w, c = h2, w2, out
    return params, macs, h, w


def r2plus1d18(t, h, w, classes=400):
    """(parameters, MACs) of R(2+1)D-18 (Tran et al. 2018, torchvision's layout): each 3x3x3 conv
    factored as 1x3x3 (to M = 27 i o / (9 i + 3 o) channels, i the block's input width, for both
    convs of a block) then 3x1x1, BN + ReLU between."""
    params = 3 * 45 * 49 + 2 * 45 + 45 * 64 * 3 + 2 * 64      # stem: 1x7x7 (/1,2,2) and 3x1x1
    h, w = conv_out(h, 7, 2, 3), conv_out(w, 7, 2, 3)
    macs = t * h * w * 45 * 3 * 49 + t * h * w * 64 * 45 * 3
    c = 64
    for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            mid = (c * out * 27) // (c * 9 + 3 * out)
            for i in (c, out):                                 # the block's two (2+1)D convs
                h2, w2 = conv_out(h, 3, s, 1), conv_out(w, 3, s, 1)
                t2 = conv_out(t, 3, s, 1)
                params += i * mid * 9 + 2 * mid + mid * out * 3 + 2 * out
                macs += t * h2 * w2 * mid * i * 9 + t2 * h2 * w2 * out * mid * 3
                if i == c and (s != 1 or c != out):            # shortcut: 1x1x1 conv + BN
                    params += c * out + 2 * out
                    macs += t2 * h2 * w2 * out * c
                t, h, w, s = t2, h2, w2, 1
            c = out
    params += 512 * classes + classes
    macs += 512 * classes
    return params, macs


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def test_independent_arithmetic_matches_published_figures():
    # torchvision's model card: resnet18 11,689,512 parameters (with its 1000-way fc);
    # r2plus1d_18 31,505,325 parameters and 40.52 GMACs on 16x112x112 (docs/method.md: 40.5).
    p, macs, _, _ = resnet18_body(3, 112, 112)
    assert p + 512 * 1000 + 1000 == 11_689_512
    assert abs(macs / 1e9 - 0.49) < 0.01
    p3, macs3 = r2plus1d18(16, 112, 112)
    assert p3 == 31_505_325
    assert abs(macs3 / 1e9 - 40.5) < 0.05


# ---- parameter counts ---------------------------------------------------------------------
def test_parameter_counts():
    p_img, _, _, _ = resnet18_body(3, 112, 112)
    assert nparams(image_trunk()) == p_img
    p_aud, _, _, bands = resnet18_body(1, 101, 40, conv1_stride=1)
    assert bands == 3
    assert nparams(audio_trunk()) == p_aud + bands + 1                    # + band weighting
    assert nparams(Fusion()) == 1024 * 1024 + 1024 + 1024 * 512 + 512
    s = build_student(num_classes=7)
    assert nparams(s) == p_img + p_aud + bands + 1 + nparams(Fusion()) + 512 * 7 + 7
    assert nparams(teacher()) == r2plus1d18(16, 112, 112)[0]


# ---- FLOPs ------------------------------------------------------------------------------------
def test_flops_match_layer_arithmetic():
    _, img_macs, _, _ = resnet18_body(3, 112, 112)
    _, aud_macs, t_after, f_after = resnet18_body(1, 101, 40, conv1_stride=1)
    cost = flops_per_moment(num_classes=31)
    assert cost["image_trunk"] == 2 * img_macs                            # 0.485 GMACs
    assert cost["audio_trunk"] == 2 * (aud_macs + 512 * t_after * f_after)
    assert cost["fusion"] == 2 * (1024 * 1024 + 1024 * 512)
    assert cost["classifier"] == 2 * 512 * 31
    assert cost["teacher"] == 2 * r2plus1d18(16, 112, 112)[1]             # 40.5 GMACs
    assert cost["image_audio"] == cost["image_trunk"] + cost["audio_trunk"] + cost["fusion"]
    # the counter scales with the batch: a real measurement, not a table look-up
    assert flops(image_trunk(), (4, 3, 112, 112)) == 4 * cost["image_trunk"]


# ---- shapes and dtypes ------------------------------------------------------------------------
def test_student_output_shapes_and_dtypes():
    torch.manual_seed(0)
    s = build_student(num_classes=5).eval()
    frames = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    logmel = torch.randn(2, 101, 40).half()
    with torch.no_grad():
        out = s(frames, logmel)
    for k in ("image", "audio", "imageaudio"):
        assert out[k].shape == (2, 512) and out[k].dtype == torch.float32
    assert out["logits"].shape == (2, 5)
    assert torch.isfinite(out["logits"]).all()
    with torch.no_grad():
        assert image_trunk()(torch.randn(1, 3, 112, 112)).shape == (1, 512)
        assert audio_trunk(time_pool="max")(torch.randn(1, 1, 101, 40)).shape == (1, 512)
        assert Fusion()(torch.randn(3, 512), torch.randn(3, 512)).shape == (3, 512)


def test_audio_trunk_reduces_band_before_time():
    # Band weighting then time max: max_t(sum_b w_b x[t, b]).  Pooling time first would give
    # sum_b w_b max_t x[t, b], which differs for mixed-sign weights.
    torch.manual_seed(0)
    a = audio_trunk(time_pool="max").eval()
    with torch.no_grad():
        a.band_pool.weight.copy_(torch.tensor([[1.0, -1.0, 0.5]]))
        x = torch.randn(2, 1, 101, 40)
        fmap = a.body(x)                                     # (2, 512, 7, 3): time x band
        assert fmap.shape[-2:] == (7, 3)
        w = a.band_pool.weight[0]
        band_first = (fmap * w).sum(-1).amax(-1) + a.band_pool.bias
        time_first = (fmap.amax(-2) * w).sum(-1) + a.band_pool.bias
        assert torch.allclose(a(x), band_first, atol=1e-5)
        assert not torch.allclose(a(x), time_first, atol=1e-3)
        # the default ("avg") starts as a plain mean over the band positions and time
        b = audio_trunk().eval()
        assert torch.allclose(b(x), b.body(x).mean((-2, -1)), atol=1e-5)


def test_teacher_outputs():
    torch.manual_seed(0)
    t = teacher()
    with torch.no_grad():
        desc, logits = t(torch.randn(1, 3, 8, 56, 56))      # any clip size pools to 512
    assert desc.shape == (1, 512) and logits.shape == (1, 400)
    assert desc.dtype == torch.float32
    assert torch.allclose(logits, t.fc(desc))
    assert (desc >= 0).all()                                 # pooled after a ReLU


# ---- checkpoints and weights ------------------------------------------------------------------
def test_student_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    s = build_student(num_classes=3)
    s.train()
    s(torch.randint(0, 256, (4, 112, 112, 3), dtype=torch.uint8), torch.randn(4, 101, 40))
    s.eval()                                                  # BN running stats now non-trivial
    h = save_student(s, tmp_path / "out" / "student.pt", config={"lr": 0.1}, classes=["a", "b", "c"])
    for where in (tmp_path / "out" / "student.pt", tmp_path / "out"):
        s2, info = load_student(where)
        assert info["hash"] == h and info["classes"] == ["a", "b", "c"]
        assert info["config"] == {"lr": 0.1}
        f = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
        m = torch.randn(2, 101, 40)
        with torch.no_grad():
            a, b = s(f, m), s2(f, m)
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # another config, same weights: another hash
    assert save_student(s, tmp_path / "x.pt", config={"lr": 0.2}, classes=["a", "b", "c"]) != h


def test_corrupt_or_missing_checkpoint_errors(tmp_path):
    s = build_student(num_classes=2)
    path = tmp_path / "s.pt"
    save_student(s, path, config={}, classes=["a", "b"])
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["classifier.bias"] += 1
    torch.save(obj, path)
    with pytest.raises(WeightsError, match="does not match its hash"):
        load_student(path)
    with pytest.raises(WeightsError, match="no such student checkpoint"):
        load_student(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_student(tmp_path / "junk.pt")


def test_teacher_local_weights_and_offline_error(tmp_path, monkeypatch):
    torch.manual_seed(2)
    t = teacher()
    net_state = {k: v for k, v in t.state_dict().items()}
    path = tmp_path / "teacher.pt"
    torch.save(net_state, path)
    t2 = teacher(weights=str(path))
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(t(x)[0], t2(x)[0])
    with pytest.raises(WeightsError, match="not an r2plus1d_18 state dict"):
        teacher(weights=str(path), num_classes=10)
    # Kinetics weights not cached and downloads off: one line saying what to pass.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("L2L_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as e:
        teacher(weights="kinetics")
    msg = str(e.value)
    assert "\n" not in msg and "--teacher-weights" in msg and "r2plus1d_18-91a641e6.pth" in msg
    with pytest.raises(WeightsError, match="--image-weights"):
        image_trunk(weights="imagenet")


def test_trunks_start_from_imagenet_as_the_authors_did(tmp_path, monkeypatch):
    """Both trunks from one resnet18 state dict (here one the test saves): the image trunk
    takes all of it but fc; the audio trunk all but fc and its 1-channel conv1, which is drawn
    fresh (N(0, 0.02), as in the authors' AudioNet).  Offline without a file: one line naming
    the option to pass."""
    from torchvision.models import resnet18
    torch.manual_seed(3)
    ref = resnet18().state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(ref, path)
    img = image_trunk(weights=str(path)).state_dict()
    aud = audio_trunk(weights=str(path)).state_dict()
    assert all(torch.equal(img[k], ref[k]) for k in img)
    for k in ("layer4.1.conv2.weight", "bn1.weight", "layer1.0.bn1.running_mean"):
        i = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"].index(
            k.split(".")[0])
        assert torch.equal(aud[f"body.{i}." + k.split(".", 1)[1]], ref[k]), k
    conv1 = aud["body.0.weight"]
    assert conv1.shape == (64, 1, 7, 7) and abs(float(conv1.std()) - 0.02) < 0.005
    # random init leaves every weight its own
    rand = audio_trunk(weights="random").state_dict()
    assert not torch.equal(rand["body.7.1.conv2.weight"], ref["layer4.1.conv2.weight"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("L2L_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as e:
        audio_trunk(weights="imagenet")
    assert "\n" not in str(e.value) and "--audio-weights" in str(e.value)
    with pytest.raises(WeightsError, match="not a resnet18 state dict"):
        torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pt")
        image_trunk(weights=str(tmp_path / "bad.pt"))

"""The synthetic generator: real H.264/AAC files, sparse signatures where annotated, determinism."""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import av
import numpy as np
import pytest
from click.testing import CliRunner

from l2l.datasets.base import load_dataset
from l2l.datasets.synthetic import PALETTE, chord_root, class_names, make_synthetic

KW = dict(classes=2, videos_per_class=2, seed=7, duration=(6.0, 8.0))


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), workers=1, **KW)


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def _decode(path):
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio


def test_files_are_h264_aac_of_the_stated_duration(syn):
    ds = load_dataset("activitynet", syn.videos_dir, syn.annotations)
    assert len(ds.videos) == 4
    for v in ds.videos:
        assert v.path is not None and v.path.suffix == ".mp4"
        assert 6.0 <= v.duration <= 8.0
        with av.open(str(v.path)) as c:
            vs, aus = c.streams.video[0], c.streams.audio[0]
            assert vs.codec_context.name == "h264" and aus.codec_context.name == "aac"
            assert vs.codec_context.format.name == "yuv420p"
            assert (vs.codec_context.width, vs.codec_context.height) == (160, 120)
            assert vs.average_rate == 30
            assert aus.codec_context.sample_rate == 16000 and aus.codec_context.channels == 1
            assert float(vs.duration * vs.time_base) == pytest.approx(v.duration, abs=0.05)
            assert float(aus.duration * aus.time_base) == pytest.approx(v.duration, abs=0.1)
            keys = [float(p.pts * p.time_base) for p in c.demux(vs) if p.is_keyframe and p.pts is not None]
        gaps = np.diff(sorted(keys))
        assert len(keys) >= int(v.duration) - 1 and np.all(gaps <= 2.0)   # a keyframe every 1-2 s


def test_signatures_appear_only_in_the_annotated_segments(syn):
    names = class_names(2)
    for vid, events in syn.events.items():
        label = next(name for kind, name, _, _ in events if kind == "evidence")
        colour = np.array(PALETTE[label.split()[0]], float)
        frames, audio = _decode(syn.videos_dir / f"{vid}.mp4")
        assert np.sqrt(np.mean(audio ** 2)) > 0.01                        # not silent

        def in_event(t, kind=None):
            return any(s <= t < e for k, _, s, e in events if kind in (None, k))

        def coloured(img):
            return int((np.abs(img.astype(float) - colour).max(axis=2) < 45).sum())

        for t, img in frames[::5]:
            if in_event(t - 0.05, "evidence") and in_event(t + 0.05, "evidence"):
                assert coloured(img) > 400, (vid, t)
            elif not in_event(t - 0.05) and not in_event(t + 0.05):
                assert coloured(img) < 20, (vid, t)

        s, e = next((s, e) for k, _, s, e in events if k == "evidence")
        seg = audio[int((s + 0.1) * 16000):int((e - 0.1) * 16000)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        freqs = np.fft.rfftfreq(len(seg), 1 / 16000)
        root = chord_root(names.index(label), 2)
        near = spec[np.abs(freqs - root) < 10].max()
        assert near > 10 * np.median(spec), (vid, root)                # the class's chord is there


def test_evidence_is_sparse_and_annotated_in_activitynet_format(syn):
    doc = json.loads(syn.annotations.read_text())
    assert doc["version"] == "VERSION 1.3" and set(doc["database"]) == set(syn.events)
    ds = load_dataset("synthetic", syn.root, None)
    assert ds.classes == tuple(sorted(class_names(2))) == syn.classes
    assert sorted(v.subset for v in ds.videos) == ["training", "training", "validation", "validation"]
    for v in ds.videos:
        entry = doc["database"][v.id]
        segs = [a["segment"] for a in entry["annotations"]]
        assert v.labels == (entry["annotations"][0]["label"],) and 2 <= len(segs) <= 3
        total = sum(e - s for s, e in segs)
        assert 0.10 * v.duration - 0.01 <= total <= max(0.20 * v.duration, len(segs) * 1.0) + 0.01
        assert all(0 <= s < e <= v.duration for s, e in segs)
        kinds = [k for k, *_ in syn.events[v.id]]
        spans = sorted((s, e) for *_, s, e in syn.events[v.id])
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))      # events never overlap
        assert kinds.count("evidence") == len(segs)


def test_deterministic_for_a_seed_and_different_across_seeds(syn, tmp_path):
    again = make_synthetic(tmp_path / "again", workers=2, **KW)     # the process-pool path
    assert _digest(again.root) == _digest(syn.root)
    other = make_synthetic(tmp_path / "other", workers=1, **{**KW, "seed": 8, "videos_per_class": 1})
    a, b = _digest(other.videos_dir), _digest(syn.videos_dir)
    assert a["syn00_000.mp4"] != b["syn00_000.mp4"]


def test_44k_audio_and_bad_arguments(tmp_path):
    s = make_synthetic(tmp_path, classes=1, videos_per_class=1, duration=(6, 6), audio_rate=44100, workers=1)
    with av.open(str(s.videos_dir / "syn00_000.mp4")) as c:
        a = c.streams.audio[0]
        assert a.codec_context.sample_rate == 44100
        assert a.time_base == Fraction(1, 44100)
    with pytest.raises(ValueError, match="duration"):
        make_synthetic(tmp_path / "x", duration=(3, 4))
    with pytest.raises(ValueError, match="even"):
        make_synthetic(tmp_path / "x", size=(161, 120))


def test_cli_make_synthetic(tmp_path):
    from l2l.cli.synthetic import commands

    (cmd,) = commands
    res = CliRunner().invoke(cmd, [str(tmp_path / "out"), "--classes", "1", "--videos-per-class", "1",
                                   "--duration-min", "6", "--duration-max", "6", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert str(tmp_path / "out" / "videos") in res.output and "annotations.json" in res.output
    assert (tmp_path / "out" / "videos" / "syn00_000.mp4").stat().st_size > 10_000
    res = CliRunner().invoke(cmd, [str(tmp_path / "bad"), "--duration-min", "2"])
    assert res.exit_code != 0

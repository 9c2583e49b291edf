"""The decode stage on small real files the test writes: the moment grid, frames, audio windows."""
from __future__ import annotations

import av
import numpy as np
import pytest

from l2l.stages.decode import DecodeConfig, DecodeError, decode_video, resize_crop_dims


def _count_frames(path):
    """Independent count: every decoded frame's pts time, with plain PyAV."""
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


@pytest.mark.parametrize("frames", [1, 15, 16, 17, 100])
def test_moment_grid_matches_independent_frame_count(make_video, frames):
    path = make_video(f"g{frames}.mp4", frames=frames)
    times = _count_frames(path)
    d = decode_video(path)
    expected_idx = list(range(0, len(times), 16))
    assert len(times) == frames
    assert d["frame_index"].tolist() == expected_idx
    assert np.allclose(d["times"], [times[i] for i in expected_idx])
    assert d["frames"].shape == (len(expected_idx), 112, 112, 3) and d["frames"].dtype == np.uint8
    assert d["waveform"].shape == (len(expected_idx), 16000)


def test_frames_are_the_kept_frames_resized(make_video):
    path = make_video("c.mp4", frames=40, size=(64, 48))
    d = decode_video(path)
    # frame i has red = i*5 (lossless H.264, flat colour): moments 0, 16, 32 -> 0, 80, 160
    red = d["frames"][:, 56, 56, 0].astype(int)
    assert np.all(np.abs(red - np.array([0, 80, 160])) <= 3)
    assert np.all(np.abs(d["frames"][:, 56, 56, 2].astype(int) - 200) <= 3)


def test_variable_frame_rate_times_come_from_pts(make_video):
    vfr = [0.0]
    for i in range(1, 40):
        vfr.append(vfr[-1] + (0.02 if i < 20 else 0.1))
    path = make_video("vfr.mp4", frames=40, vfr_times=vfr, audio_rate=None)
    d = decode_video(path, DecodeConfig(grid="frames"))          # every 16th decoded frame
    assert np.allclose(d["times"], [vfr[0], vfr[16], vfr[32]], atol=2e-3)
    # the time grid (tests/test_timeline.py): moments every 16/30 s up to the last frame (2.38 s)
    d = decode_video(path)
    assert np.allclose(d["times"], np.arange(5) * 16 / 30)


def test_audio_window_is_the_tone_at_the_moment(make_video):
    path = make_video("tone.mp4", frames=96, tone_hz=440.0)   # 3.2 s of 440 Hz
    d = decode_video(path)
    w = d["waveform"]
    assert d["has_audio"]
    spec = np.abs(np.fft.rfft(w[1]))
    assert abs(np.argmax(spec) - 440) <= 2                     # 1 s window: bin = Hz
    assert 0.25 < np.sqrt((w[1] ** 2).mean()) < 0.45           # 0.5-amplitude sine, rms 0.354
    # the last window (from 2.667 s) runs past the end of the audio (3.2 s): zero-padded
    end = int(round((3.2 - d["times"][-1]) * 16000))          # ~8533 samples of tone
    assert np.sqrt((w[-1][:end - 500] ** 2).mean()) > 0.25
    assert np.all(w[-1][end + 1000:] == 0)


def test_no_audio_stream_gives_silence_and_flag(make_video):
    path = make_video("mute.mp4", frames=40, audio_rate=None)
    d = decode_video(path)
    assert not d["has_audio"]
    assert np.count_nonzero(d["waveform"]) == 0
    assert len(d["times"]) == 3


def test_other_rates_and_channels_are_resampled_to_16k_mono(make_video):
    path = make_video("s51.mp4", frames=60, audio_rate=44100, channels="5.1", tone_hz=1000.0)
    d = decode_video(path)
    spec = np.abs(np.fft.rfft(d["waveform"][0]))
    assert abs(np.argmax(spec) - 1000) <= 3


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"\x00garbage" * 500, "cannot open")])
def test_unusable_files_raise_one_line(tmp_path, content, reason):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(DecodeError) as e:
        decode_video(p)
    assert str(p) in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)


def test_audio_only_file_is_no_video_stream(tmp_path):
    p = tmp_path / "a.m4a"
    with av.open(str(p), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        af.sample_rate = 16000
        for pkt in s.encode(af):
            out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    with pytest.raises(DecodeError, match="no video stream"):
        decode_video(p)


def test_resize_crop_dims_short_side():
    assert resize_crop_dims(320, 240, 112) == (149, 112, 18, 0)
    assert resize_crop_dims(61, 97, 112) == (112, 178, 0, 33)
    assert DecodeConfig().stride == 16

"""The spectrogram stage equals torchaudio applied directly to the same samples (within the
float16 step it is stored in: the FFTs are numpy's, in float32), with torchaudio's filter bank."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from l2l.stages.decode import decode_video
import pytest

from l2l.stages.spectrogram import DEFAULT_BANK, Spectrogram, SpectrogramConfig, torchaudio_bank


def test_logmel_equals_torchaudio_on_decoded_samples(make_video):
    d = decode_video(make_video("t.mp4", frames=64, tone_hz=700.0))
    out = Spectrogram().run({"waveform": d["waveform"]})["logmel"]
    assert out.shape == (len(d["times"]), 101, 40) and out.dtype == np.float16
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400,
                                               hop_length=160, n_mels=40,
                                               window_fn=torch.hann_window)
    ref = torch.log(torch.clamp(mel(torch.from_numpy(d["waveform"])), min=1e-6)).transpose(1, 2)
    _assert_close_to_torchaudio(out, ref.numpy().astype(np.float16))
    # a real tone: its band is far above silence's floor
    assert out[0].max() > np.log(1e-6) + 10


def test_batching_does_not_change_numbers():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 16000)).astype(np.float32)
    a = Spectrogram(SpectrogramConfig(batch_size=2)).run({"waveform": w})["logmel"]
    b = Spectrogram(SpectrogramConfig(batch_size=512)).run({"waveform": w})["logmel"]
    assert np.array_equal(a, b)
    assert Spectrogram(SpectrogramConfig(batch_size=2)).config_hash == Spectrogram().config_hash
    assert Spectrogram(SpectrogramConfig(floor=1e-5)).config_hash != Spectrogram().config_hash


def test_silence_is_the_log_floor():
    out = Spectrogram().run({"waveform": np.zeros((2, 16000), np.float32)})["logmel"]
    assert np.all(out == np.float16(np.log(1e-6)))


def _assert_close_to_torchaudio(out: np.ndarray, ref: np.ndarray) -> None:
    """At least 99 % of the values bit-equal, none more than two float16 steps of |v| >= 8
    apart (float32 FFTs round differently; a difference of 0.016 in log power is 1.6 %)."""
    diff = np.abs(out.astype(np.float32) - ref.astype(np.float32))
    assert (out == ref).mean() >= 0.99 and diff.max() <= 0.016, ((out == ref).mean(), diff.max())


def test_logmel_close_to_torchaudio_on_noise_tones_and_silence():
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    w = np.concatenate([rng.standard_normal((8, 16000)) * rng.uniform(1e-4, 1, (8, 1)),
                        np.sin(2 * np.pi * rng.uniform(50, 7900, (8, 1)) * t) * 0.5,
                        np.zeros((2, 16000))]).astype(np.float32)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400,
                                               hop_length=160, n_mels=40,
                                               window_fn=torch.hann_window)
    ref = torch.log(torch.clamp(mel(torch.from_numpy(w)), min=1e-6)).transpose(1, 2)
    _assert_close_to_torchaudio(Spectrogram().run({"waveform": w})["logmel"],
                                ref.numpy().astype(np.float16))


def test_shipped_filter_bank_is_torchaudios():
    """The default bank ships as a file (no torch import at run time); it is torchaudio's."""
    shipped = np.load(DEFAULT_BANK)
    assert shipped.dtype == np.float32 and shipped.shape == (201, 40)
    assert np.array_equal(shipped, torchaudio_bank(SpectrogramConfig()))
    assert np.array_equal(shipped, torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, n_mels=40).mel_scale.fb.numpy())


def test_other_geometry_asks_torchaudio_and_keys_differ():
    cfg = SpectrogramConfig(n_mels=64, n_fft=512, win_length=400)
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 16000)).astype(np.float32)
    out = Spectrogram(cfg).run({"waveform": w})["logmel"]
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400,
                                               hop_length=160, n_mels=64,
                                               window_fn=torch.hann_window)
    ref = torch.log(torch.clamp(mel(torch.from_numpy(w)), min=1e-6)).transpose(1, 2)
    assert out.shape == (3, 101, 64)
    _assert_close_to_torchaudio(out, ref.numpy().astype(np.float16))
    assert Spectrogram(cfg).config_hash != Spectrogram().config_hash


def test_only_the_current_implementation_is_made():
    with pytest.raises(ValueError, match="version 1"):
        SpectrogramConfig(version=1)


def test_decode_and_spectrogram_import_no_torch(make_video):
    """The point of the numpy path: a decode + spectrogram run never pays torch's import."""
    import subprocess
    import sys
    path = make_video("t.mp4", frames=40, tone_hz=500.0)
    code = ("import sys\n"
            "from l2l.stages.decode import decode_video\n"
            "from l2l.stages.spectrogram import Spectrogram\n"
            f"d = decode_video({str(path)!r})\n"
            "s = Spectrogram(); s.setup('cpu')\n"
            "out = s.run({'waveform': d['waveform']})['logmel']\n"
            "assert out.shape[1:] == (101, 40), out.shape\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"

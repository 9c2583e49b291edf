"""The spectrogram stage equals torchaudio applied directly to the same samples."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from l2l.stages.decode import decode_video
from l2l.stages.spectrogram import Spectrogram, SpectrogramConfig


def test_logmel_equals_torchaudio_on_decoded_samples(make_video):
    d = decode_video(make_video("t.mp4", frames=64, tone_hz=700.0))
    out = Spectrogram().run({"waveform": d["waveform"]})["logmel"]
    assert out.shape == (len(d["times"]), 101, 40) and out.dtype == np.float16
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400,
                                               hop_length=160, n_mels=40,
                                               window_fn=torch.hann_window)
    ref = torch.log(torch.clamp(mel(torch.from_numpy(d["waveform"])), min=1e-6)).transpose(1, 2)
    assert np.array_equal(out, ref.numpy().astype(np.float16))
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

"""The spectrogram stage: 1 s mono 16 kHz windows -> (101, 40) log-mel spectrograms.

The numbers of torchaudio's ``MelSpectrogram`` (Hann window 400, hop 160, n_fft 400, 40 mel
bands from ``torchaudio.functional.melscale_fbanks``, power 2, centred frames with reflect
padding, so 16,000 samples give 101 frames), then ``log(max(mel, floor))``.  Stored as
``logmel`` (N, 101, 40), time x band, float16 by default.  Many windows go through one call.

How (``version`` 2 of the config): the frames' FFT is numpy's (pocketfft, float32), the mel
projection and the log are float64; the filter bank is torchaudio's.  Why not torchaudio's
transform itself (``version`` 1): importing torch costs a CPU-bound 1.5 s per process, during
which the decode threads starve for the GIL, and a decode + spectrogram run needs no other
torch; ``benchmarks/bench_cli.py`` measures the whole command.  The default filter bank ships
as ``melbank_sr16000_nfft400_mels40.npy``, written by torchaudio (``write_default_bank``; a test
checks it is bit-equal to torchaudio's), so no torch is imported for the default config; any
other config asks torchaudio at set-up.  The result equals torchaudio's transform within one
float16 step (float32 FFTs differ in their last bits; ``tests/test_spectrogram.py``).

The stage always runs on the CPU, whatever ``--device`` says.  Bits across machines: pocketfft
has no run-time CPU dispatch, and the float64 projection and log differ between CPUs (BLAS
kernels, vectorised log) by far less than the float16 step they are rounded to.
Not here: decoding or resampling (``stages/decode.py``).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from .base import Stage, register

DEFAULT_BANK = Path(__file__).with_name("melbank_sr16000_nfft400_mels40.npy")


@dataclasses.dataclass(frozen=True)
class SpectrogramConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    floor: float = 1e-6          # log(max(mel power, floor))
    dtype: str = "float16"       # stored dtype
    batch_size: int = 32         # windows at a time (does not change the numbers)
    version: int = 2             # the implementation (module docstring); 1 is no longer made

    def __post_init__(self):
        if self.version != 2:
            raise ConfigError(f"spectrogram version {self.version}: only version 2 is made "
                              "(numpy FFT, torchaudio's filter bank)")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"spectrogram win_length {self.win_length} must be in 1..n_fft ({self.n_fft})")


def _bank_args(config: SpectrogramConfig) -> dict:
    return dict(n_freqs=config.n_fft // 2 + 1, f_min=0.0, f_max=config.sample_rate / 2,
                n_mels=config.n_mels, sample_rate=config.sample_rate)


def torchaudio_bank(config: SpectrogramConfig) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32: torchaudio's mel filter bank, as ``MelSpectrogram``
    builds it (HTK scale, no norm, 0 Hz to Nyquist)."""
    import torchaudio
    return torchaudio.functional.melscale_fbanks(**_bank_args(config)).numpy()


def write_default_bank() -> Path:
    """(Re)write the shipped default filter bank from torchaudio."""
    np.save(DEFAULT_BANK, torchaudio_bank(SpectrogramConfig()))
    return DEFAULT_BANK


@functools.lru_cache(maxsize=8)
def mel_bank(config: SpectrogramConfig) -> np.ndarray:
    """The filter bank for ``config`` as float64: the shipped file for the default geometry,
    else torchaudio's (which imports torch)."""
    d = SpectrogramConfig()
    same = all(getattr(config, f) == getattr(d, f) for f in ("sample_rate", "n_fft", "n_mels"))
    bank = np.load(DEFAULT_BANK) if same and DEFAULT_BANK.exists() else torchaudio_bank(config)
    bank = bank.astype(np.float64)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=8)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    """torch's periodic Hann window, zero-padded to ``n_fft`` at both sides as ``torch.stft``
    does, float32."""
    w = np.zeros(n_fft, np.float32)
    left = (n_fft - win_length) // 2
    w[left:left + win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    return w


def log_mel(waveform: np.ndarray, config: SpectrogramConfig = SpectrogramConfig()) -> np.ndarray:
    """(N, samples) float32 -> (N, frames, n_mels) log-mel in ``config.dtype`` (time x band).
    Works ``config.batch_size`` windows at a time in buffers allocated once per call: small
    batches stay in cache (32 windows: 0.46 s per 2,048 windows on one core, against 0.89 s
    in batches of 128 and 1.08 s for torchaudio's transform on one thread)."""
    bank, window = mel_bank(config), _window(config.win_length, config.n_fft)
    n_fft, hop, pad = config.n_fft, config.hop_length, config.n_fft // 2
    waveform = np.asarray(waveform, np.float32)
    n_frames, bins = 1 + waveform.shape[1] // hop, n_fft // 2 + 1
    out = np.empty((len(waveform), n_frames, config.n_mels), dtype=config.dtype)
    b = max(1, min(config.batch_size, len(waveform)))
    framed = np.empty((b, n_frames, n_fft), np.float32)
    spec = np.empty((b, n_frames, bins), np.complex64)
    power = np.empty((b, n_frames, bins), np.float32)
    mel = np.empty((b, n_frames, config.n_mels), np.float64)
    for s in range(0, len(waveform), b):
        x = np.pad(waveform[s:s + b], ((0, 0), (pad, pad)), mode="reflect")
        n = len(x)
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop]
        np.multiply(frames, window, out=framed[:n])
        np.fft.rfft(framed[:n], axis=-1, out=spec[:n])
        np.square(spec.real[:n], out=power[:n])
        power[:n] += np.square(spec.imag[:n])
        m = np.matmul(power[:n], bank, out=mel[:n])                    # float64
        out[s:s + n] = np.log(np.maximum(m, config.floor, out=m), out=m)
    return out


@register
class Spectrogram(Stage):
    """``waveform`` (N, 16000) float32 -> ``logmel`` (N, 101, 40) float16, time x band."""

    name = "spectrogram"
    Config = SpectrogramConfig
    inputs = ("waveform",)
    outputs = ("logmel",)
    hash_exclude = ("batch_size",)

    def setup(self, device: str = "cpu") -> None:
        """Load the mel filter bank (on the CPU whatever ``device`` is; module docstring)."""
        mel_bank(self.config)

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        """``device`` is ignored: the spectrogram is computed on the CPU."""
        return {"logmel": log_mel(inputs["waveform"], self.config)}

"""The spectrogram stage: 1 s mono 16 kHz windows -> (101, 40) log-mel spectrograms.

torchaudio's ``MelSpectrogram`` (Hann window 400, hop 160, n_fft 400, 40 mel bands, power 2,
centred frames, so 16,000 samples give 101 frames), then ``log(max(mel, floor))``.  Stored as
``logmel`` (N, 101, 40), time x band, float16 by default.  Many windows go through one call.
The stage always runs on the CPU, whatever ``--device`` says: the same waveform gives the same
bytes on every machine (a GPU's FFT differs in the last bits, and the cache key does not say
where it ran).  Not here: decoding or resampling (``stages/decode.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .base import Stage, register


@dataclasses.dataclass(frozen=True)
class SpectrogramConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    floor: float = 1e-6          # log(max(mel power, floor))
    dtype: str = "float16"       # stored dtype
    batch_size: int = 512        # windows per call (does not change the numbers)


def mel_transform(config: SpectrogramConfig):
    import torch
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, n_mels=config.n_mels, window_fn=torch.hann_window,
        power=2.0, center=True)


def log_mel(waveform: np.ndarray, config: SpectrogramConfig = SpectrogramConfig(), *,
            device: str = "cpu", transform=None) -> np.ndarray:
    """(N, samples) float32 -> (N, frames, n_mels) log-mel in ``config.dtype`` (time x band)."""
    import torch

    transform = (transform or mel_transform(config)).to(device)
    out = np.empty((len(waveform), 1 + waveform.shape[1] // config.hop_length, config.n_mels),
                   dtype=config.dtype)
    with torch.no_grad():
        for s in range(0, len(waveform), config.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(waveform[s:s + config.batch_size],
                                                      dtype=np.float32)).to(device)
            mel = transform(x).clamp_min(config.floor).log()      # (B, n_mels, frames)
            out[s:s + len(x)] = mel.transpose(1, 2).cpu().numpy().astype(config.dtype)
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
        """Build the mel filter bank, on the CPU whatever ``device`` is (see the docstring)."""
        self._transform = mel_transform(self.config)

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        """``device`` is ignored: the spectrogram is computed on the CPU."""
        if getattr(self, "_transform", None) is None:
            self.setup()
        return {"logmel": log_mel(inputs["waveform"], self.config, transform=self._transform)}

"""The features stage: a trained IMGAUD2VID student run over every moment of a video.

Reads the stored ``frames`` (N, 112, 112, 3) uint8 and ``logmel`` (N, 101, 40) float16 and writes
``image``, ``audio`` and ``imageaudio`` (N, 512) float16: the image trunk's, the audio trunk's and
the fused (Psi) embeddings.  The checkpoint's content hash is part of the config hash, so the
features of two checkpoints never share a cache key; its path, the batch size and the precision
switch are not (they do not say which numbers these are).

Moments go through in fixed chunks of ``batch_size`` from the video's first moment, so a video's
features do not depend on the videos extracted with it.  On CUDA: autocast (bf16 where supported,
else fp16) and channels-last; on CPU: float32, deterministic.  Not here: the model
(``models/students.py``) or its training (``training/student.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .base import ModelStage, register


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    checkpoint: str = ""          # a student checkpoint file or a train-student --out folder
    dtype: str = "float16"        # stored dtype
    batch_size: int = 64          # moments per forward pass (at most the last bit changes)
    amp: bool = True              # mixed precision on CUDA (ignored on CPU)
    # the checkpoint's content hash, always read from ``checkpoint`` (never copied by replace)
    checkpoint_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self):
        if self.checkpoint:
            from l2l.models.students import read_checkpoint_hash
            object.__setattr__(self, "checkpoint_hash", read_checkpoint_hash(self.checkpoint))


def _check_inputs(frames: np.ndarray, logmel: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[1:] != (112, 112, 3) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, 112, 112, 3) uint8, not {frames.shape} {frames.dtype}")
    if logmel.ndim != 3 or logmel.shape[1:] != (101, 40):
        raise ValueError(f"logmel must be (N, 101, 40), not {logmel.shape}")
    if len(frames) != len(logmel):
        raise ValueError(f"{len(frames)} frames but {len(logmel)} log-mel windows")


@register
class Features(ModelStage):
    """``frames`` + ``logmel`` -> ``image``, ``audio``, ``imageaudio`` (N, 512) float16."""

    name = "features"
    Config = FeaturesConfig
    inputs = ("frames", "logmel")
    outputs = ("image", "audio", "imageaudio")
    cost_models = {"image": ("image_trunk",), "audio": ("audio_trunk",),
                   "imageaudio": ("image_trunk", "audio_trunk", "fusion")}
    hash_exclude = ("checkpoint", "batch_size", "amp")

    def setup(self, device: str = "cpu") -> None:
        """Load the student once; its content must still match ``checkpoint_hash``."""
        import torch
        from l2l.models.students import load_student
        if not self.config.checkpoint:
            raise ValueError("the features stage needs a student checkpoint (--student PATH)")
        model, info = load_student(self.config.checkpoint)
        if info["hash"] != self.config.checkpoint_hash:
            raise ValueError(f"{info['path']}: checkpoint hash {info['hash']} is not the "
                             f"configured {self.config.checkpoint_hash} (file replaced?)")
        model = model.to(device).eval()
        if torch.device(device).type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model, self.device = model, device

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        import torch
        if self.model is None or self.device != device:
            self.setup(device)
        frames, logmel = np.asarray(inputs["frames"]), np.asarray(inputs["logmel"])
        _check_inputs(frames, logmel)
        dev = torch.device(device)
        cuda = dev.type == "cuda"
        amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        out = {k: np.zeros((len(frames), 512), self.config.dtype) for k in self.outputs}
        b = self.config.batch_size
        # (B, 112, 112, 3) frames permuted to (B, 3, 112, 112) are channels-last already.
        with torch.inference_mode(), torch.autocast(dev.type, amp_dtype,
                                                    enabled=cuda and self.config.amp):
            for s in range(0, len(frames), b):
                f = torch.from_numpy(frames[s:s + b]).to(dev, non_blocking=True)
                m = torch.from_numpy(np.ascontiguousarray(logmel[s:s + b], np.float32)).to(dev)
                got = self.model(f, m)
                for k in self.outputs:
                    out[k][s:s + b] = got[k].float().cpu().numpy().astype(self.config.dtype)
        return out

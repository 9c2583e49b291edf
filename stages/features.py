"""The features stage: a trained IMGAUD2VID student run over every moment of a video.

Reads the stored ``frames`` (N, 112, 112, 3) uint8 and ``logmel`` (N, 101, 40) float16 and writes
``image``, ``audio`` and ``imageaudio`` (N, 512) float16: the image trunk's, the audio trunk's and
the fused (Psi) embeddings.  The checkpoint's content hash is part of the config hash, so the
features of two checkpoints never share a cache key; its path and the batch size are not (they
do not say which numbers these are).  ``device`` and ``precision`` (set by ``for_device``) and
``compile`` are: GPU numbers (bf16 autocast by default, or fp32 with cuDNN's own algorithms) and
``torch.compile``'s fused kernels differ from the CPU's in the last bits.

On CPU a video's moments go through in fixed chunks of ``batch_size`` (64) from its first
moment, float32, so its features do not depend on the videos extracted with it; on CUDA,
moments of many videos share forward passes of ``batch_size`` (1024), channels-last
(``stages/model.py``).  Not here: the model (``models/students.py``) or its training
(``training/student.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from .base import register
from .model import ModelStage, check_placement_fields


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    checkpoint: str = ""          # a student checkpoint file or a train-student --out folder
    dtype: str = "float16"        # stored dtype
    batch_size: int = 0           # moments per forward pass; 0: 64 on CPU, 1024 on CUDA
    precision: str = "auto"       # "fp32", "bf16" or "auto" (bf16 on CUDA, fp32 on CPU)
    device: str = ""              # "cpu" or "cuda": where the numbers are made (for_device)
    compile: bool = False         # torch.compile the student (other kernels: other last bits)
    # the checkpoint's content hash, always read from ``checkpoint`` (never copied by replace)
    checkpoint_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self):
        check_placement_fields(self)
        if self.checkpoint:
            from l2l.models.students import read_checkpoint_hash
            object.__setattr__(self, "checkpoint_hash", read_checkpoint_hash(self.checkpoint))


@register
class Features(ModelStage):
    """``frames`` + ``logmel`` -> ``image``, ``audio``, ``imageaudio`` (N, 512) float16."""

    name = "features"
    Config = FeaturesConfig
    inputs = ("frames", "logmel")
    outputs = ("image", "audio", "imageaudio")
    cost_models = {"image": ("image_trunk",), "audio": ("audio_trunk",),
                   "imageaudio": ("image_trunk", "audio_trunk", "fusion")}
    hash_exclude = ("checkpoint", "batch_size")
    batch_inputs = ("frames", "logmel")
    cpu_batch, gpu_batch = 64, 1024

    def load_model(self, device: str):
        """The student, checked against ``checkpoint_hash``; channels-last on CUDA."""
        import torch
        from l2l.models.students import load_student
        if not self.config.checkpoint:
            raise ConfigError("the features stage needs a student checkpoint (--student PATH)")
        model, info = load_student(self.config.checkpoint)
        if info["hash"] != self.config.checkpoint_hash:
            raise ConfigError(f"{info['path']}: checkpoint hash {info['hash']} is not the "
                              f"configured {self.config.checkpoint_hash} (file replaced?)")
        model = model.to(device).eval()
        if torch.device(device).type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def check_inputs(self, inputs: dict[str, Any]) -> int:
        frames, logmel = inputs["frames"], inputs["logmel"]
        if frames.ndim != 4 or frames.shape[1:] != (112, 112, 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, 112, 112, 3) uint8, not {frames.shape} {frames.dtype}")
        if logmel.ndim != 3 or logmel.shape[1:] != (101, 40) or logmel.dtype.kind != "f":
            raise ValueError(f"logmel must be (N, 101, 40) float, not {logmel.shape} {logmel.dtype}")
        if len(frames) != len(logmel):
            raise ValueError(f"{len(frames)} frames but {len(logmel)} log-mel windows")
        return len(frames)

    def output_dims(self) -> dict[str, int]:
        return {k: 512 for k in self.outputs}

    def forward(self, model, frames, logmel) -> dict[str, Any]:
        # (B, 112, 112, 3) uint8 frames are made float and ImageNet-normalised inside the model,
        # on its device; permuted to (B, 3, 112, 112) they are channels-last already.
        got = model(frames, logmel.float())
        return {k: got[k] for k in self.outputs}

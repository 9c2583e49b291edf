"""The teacher stage: R(2+1)D-18 clip descriptors and logits for every moment of a video.

Reads ``clips`` (N, clip_len, clip_crop, clip_crop, 3) uint8 RGB, one per moment, which the
decode stage makes in its single pass over the file when asked (``upstream_options``): for the
moment at grid tick u, the frames of ticks u, u+step, ..., u+(clip_len-1)*step (on the default
30 fps timeline, 16 frames 2/30 s apart, each the last decoded frame at or before its time; on
``decode.grid=frames``, decoded frames), as displayed (rotation applied), each resized to exactly
``clip_resize`` (h, w) and centre-cropped to ``clip_crop``, the last frame repeated past the end.
With the defaults (16 frames, every other one, 128x171, crop 112) that is what torchvision's
``R2Plus1D_18_Weights.KINETICS400_V1.transforms()`` expects; the scaling to [0, 1] and the
Kinetics mean/std are applied here, on the model's device.  The clips are transient (never
stored).  Stored: ``teacher`` (N, 512) float16, the pooled descriptor, and ``teacher_logits``
(N, num_classes) float16.

The clip geometry is hashed here (decode's key leaves it out), as are ``device``/``precision``
(``for_device``) and ``compile``; the weights are hashed by content.  Clips go through in
batches of ``batch_size`` (8 per video on CPU; 128 across videos on CUDA; ``stages/model.py``).
Not here: decoding (``stages/decode.py``) or the network (``models/teacher.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from .base import register
from .model import ModelStage, check_placement_fields


def _pair(value) -> tuple[int, int]:
    """(h, w) from a tuple/list or a "128,171" / "128x171" string (``--set``)."""
    if isinstance(value, str):
        value = value.replace("x", ",").split(",")
    h, w = (int(v) for v in value)
    return h, w


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    weights: str = "kinetics"     # "kinetics", "random" (tests only) or a local state-dict path
    num_classes: int = 400
    clip_len: int = 16            # frames per clip
    clip_step: int = 2            # every other grid tick (2/30 s; decoded frames on grid=frames)
    clip_resize: tuple = (128, 171)   # (h, w) every clip frame is resized to
    clip_crop: int = 112          # then centre-cropped to clip_crop x clip_crop
    dtype: str = "float16"        # stored dtype
    batch_size: int = 0           # clips per forward pass; 0: 8 on CPU, 128 on CUDA
    precision: str = "auto"       # "fp32", "bf16" or "auto" (bf16 on CUDA, fp32 on CPU)
    device: str = ""              # "cpu" or "cuda": where the numbers are made (for_device)
    compile: bool = False         # torch.compile the network (other kernels: other last bits)
    # identity of the weights ("kinetics400_v1", "random" or a file's sha256), always derived
    # from ``weights`` (never copied by dataclasses.replace)
    weights_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self):
        from l2l.models.teacher import weights_fingerprint
        check_placement_fields(self)
        object.__setattr__(self, "clip_resize", _pair(self.clip_resize))
        if self.clip_len < 1 or self.clip_step < 1:
            raise ConfigError(f"clip_len and clip_step must be >= 1, not {self.clip_len}, {self.clip_step}")
        if not 0 < self.clip_crop <= min(self.clip_resize):
            raise ConfigError(f"clip_crop {self.clip_crop} does not fit in clip_resize {self.clip_resize}")
        w = None if self.weights == "random" else self.weights
        object.__setattr__(self, "weights_hash", weights_fingerprint(w))


@register
class TeacherStage(ModelStage):
    """``clips`` (N, 16, 112, 112, 3) uint8 -> ``teacher`` (N, 512), ``teacher_logits`` (N, C)."""

    name = "teacher"
    Config = TeacherConfig
    inputs = ("clips",)
    outputs = ("teacher", "teacher_logits")
    cost_models = {"teacher": ("teacher",), "teacher_logits": ("teacher",)}
    hash_exclude = ("weights", "batch_size")
    batch_inputs = ("clips",)
    cpu_batch, gpu_batch = 8, 128

    def upstream_options(self) -> dict[str, dict[str, Any]]:
        """Decode makes the clips in its own pass: ask it for this geometry."""
        c = self.config
        return {"decode": {"clip_len": c.clip_len, "clip_step": c.clip_step,
                           "clip_resize": tuple(c.clip_resize), "clip_crop": c.clip_crop}}

    def load_model(self, device: str):
        import torch
        from l2l.models.teacher import teacher, weights_fingerprint
        w = None if self.config.weights == "random" else self.config.weights
        if weights_fingerprint(w) != self.config.weights_hash:
            raise ConfigError(f"{self.config.weights}: teacher weights changed since the config "
                              f"was made (hash {self.config.weights_hash})")
        model = teacher(weights=w, num_classes=self.config.num_classes).to(device).eval()
        if torch.device(device).type == "cuda":
            model = model.to(memory_format=torch.channels_last_3d)
        return model

    def check_inputs(self, inputs: dict[str, Any]) -> int:
        clips, c = inputs["clips"], self.config
        want = (c.clip_len, c.clip_crop, c.clip_crop, 3)
        if clips.ndim != 5 or clips.shape[1:] != want or clips.dtype != np.uint8:
            raise ValueError(f"clips must be (N, {', '.join(map(str, want))}) uint8, not "
                             f"{clips.shape} {clips.dtype} (decode's clip options do not match "
                             "the teacher's)")
        return len(clips)

    def output_dims(self) -> dict[str, int]:
        return {"teacher": 512, "teacher_logits": self.config.num_classes}

    def prepare(self, clips):
        """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float32, Kinetics-normalised, on the clips'
        device (channels-last-3d on CUDA)."""
        import torch
        from l2l.models.teacher import normalise_clips
        x = normalise_clips(clips)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return (x,)

    def forward(self, model, x) -> dict[str, Any]:
        desc, logits = model(x)
        return {"teacher": desc, "teacher_logits": logits}

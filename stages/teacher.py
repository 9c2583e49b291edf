"""The teacher stage: R(2+1)D-18 clip descriptors and logits for every moment of a video.

For each moment (decoded frame f = 0, 16, 32, ..., the decode stage's grid) the clip is frames
f, f+2, ..., f+30, each resized so the short side is 112 and centre-cropped (the decode stage's
``frame_to_rgb``), the last decoded frame repeated past the end.  Clips go through the teacher in
batches.  Stored: ``teacher`` (N, 512) float16, the pooled descriptor, and ``teacher_logits``
(N, num_classes) float16.  The clips are not kept.

It makes its own PyAV pass over the file and holds only a rolling window of the (at most 16)
frames still needed, however long the video.  Not here: the model itself (``models/teacher.py``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .base import ModelStage, register
from .decode import DecodeError, _one_line, frame_to_rgb


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    weights: str = "kinetics"     # "kinetics", "random" (tests only) or a local state-dict path
    num_classes: int = 400
    stride: int = 16              # the moment grid: every 16th decoded frame (as decode)
    size: int = 112
    clip_len: int = 16
    step: int = 2                 # every other frame
    dtype: str = "float16"        # stored dtype
    batch_size: int = 8           # clips per forward pass (at most the last bit changes)
    # identity of the weights ("kinetics400_v1", "random" or a file's sha256), always derived
    # from ``weights`` (never copied by dataclasses.replace)
    weights_hash: str = dataclasses.field(default="", init=False)

    def __post_init__(self):
        from l2l.models.teacher import weights_fingerprint
        w = None if self.weights == "random" else self.weights
        object.__setattr__(self, "weights_hash", weights_fingerprint(w))


def teacher_clips(path, *, stride: int = 16, size: int = 112, clip_len: int = 16,
                  step: int = 2) -> Iterator[np.ndarray]:
    """Yield, in moment order, each moment's clip: (clip_len, size, size, 3) uint8 RGB.
    Streams the file; only frames a pending clip still needs are kept.  ``DecodeError`` for a
    file that cannot be decoded."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DecodeError(path, "file not found")
    span = (clip_len - 1) * step

    def needed(i: int) -> bool:   # is frame i in some moment's clip?
        first = max(0, -(-(i - span) // stride) * stride)
        return any((i - m) % step == 0 for m in range(first, i + 1, stride))

    window: dict[int, np.ndarray] = {}
    nxt, last_i, last_frame = 0, -1, None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(path, "no video stream")
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(vs)):
                if needed(i):
                    window[i] = frame_to_rgb(frame, size)
                last_i, last_frame = i, frame
                while nxt + span <= i:
                    yield np.stack([window[nxt + k * step] for k in range(clip_len)])
                    nxt += stride
                    window = {j: a for j, a in window.items() if j >= nxt}
    except av.error.FFmpegError as e:
        raise DecodeError(path, f"cannot decode: {_one_line(e)}") from None
    if last_frame is None:
        raise DecodeError(path, "no decodable video frames")
    last = window[last_i] if last_i in window else frame_to_rgb(last_frame, size)
    while nxt <= last_i:
        yield np.stack([window.get(nxt + k * step, last) if nxt + k * step <= last_i else last
                        for k in range(clip_len)])
        nxt += stride


@register
class TeacherStage(ModelStage):
    """Media file -> ``teacher`` (N, 512) and ``teacher_logits`` (N, C), float16."""

    name = "teacher"
    Config = TeacherConfig
    inputs = ("source",)
    outputs = ("teacher", "teacher_logits")
    cost_models = {"teacher": ("teacher",), "teacher_logits": ("teacher",)}
    hash_exclude = ("weights", "batch_size")

    def setup(self, device: str = "cpu") -> None:
        from l2l.models.teacher import teacher, weights_fingerprint
        w = None if self.config.weights == "random" else self.config.weights
        if weights_fingerprint(w) != self.config.weights_hash:
            raise ValueError(f"{self.config.weights}: teacher weights changed since the config "
                             f"was made (hash {self.config.weights_hash})")
        self.model = teacher(weights=w, num_classes=self.config.num_classes).to(device)
        if str(device).startswith("cuda"):
            import torch
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.device = device

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        import torch
        from l2l.models.teacher import normalise_clips
        if self.model is None or self.device != device:
            self.setup(device)
        c = self.config
        descs, logits, batch = [], [], []

        def flush():
            x = normalise_clips(torch.from_numpy(np.stack(batch)).to(device))
            cuda = x.device.type == "cuda"
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
                d, lg = self.model(x)
            descs.append(d.float().cpu().numpy())
            logits.append(lg.float().cpu().numpy())
            batch.clear()

        for clip in teacher_clips(source, stride=c.stride, size=c.size, clip_len=c.clip_len,
                                  step=c.step):
            batch.append(clip)
            if len(batch) == c.batch_size:
                flush()
        if batch:
            flush()
        return {"teacher": np.concatenate(descs).astype(c.dtype),
                "teacher_logits": np.concatenate(logits).astype(c.dtype)}

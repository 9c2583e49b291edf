"""The IMGAUD2VID teacher: torchvision's R(2+1)D-18 returning its pooled clip descriptor and logits.

What is here: the ``teacher`` factory (Kinetics-400 weights from torchvision's enum, a local
checkpoint, or random init) and the clip normalisation those weights expect.  What is not: clip
sampling from a video (decode's single pass, ``core/media.py``), batching (``stages/teacher.py``)
and costs (``models/cost.py``).

Input: (B, 3, 16, 112, 112) float clips (channels, time, height, width), already normalised with
``normalise_clips``.  Output: descriptor (B, 512) and logits (B, num_classes), float32.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18

from l2l.models.students import WeightsError, load_state_file, load_torchvision_weights

KINETICS = R2Plus1D_18_Weights.KINETICS400_V1
# What torchvision's video weights expect (KINETICS.transforms()), on [0, 1] RGB.
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)
CLIP_LEN = 16      # frames per clip
CLIP_STEP = 2      # every other decoded frame
NO_WEIGHTS_HINT = ("pass --teacher-weights PATH (a state dict of torchvision's r2plus1d_18), "
                   "or run once online so torchvision caches the Kinetics-400 weights")


class Teacher(nn.Module):
    """R(2+1)D-18 split at its pooled descriptor: ``forward`` returns (descriptor, logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem, self.layer1, self.layer2 = net.stem, net.layer1, net.layer2
        self.layer3, self.layer4, self.avgpool, self.fc = net.layer3, net.layer4, net.avgpool, net.fc

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        desc = self.avgpool(x).flatten(1)                 # (B, 512)
        return desc, self.fc(desc)


def normalise_clips(clips: torch.Tensor) -> torch.Tensor:
    """(B, 16, 112, 112, 3) uint8 RGB (time, height, width, channel) -> (B, 3, 16, 112, 112)
    float32, scaled to [0, 1] and normalised with the Kinetics mean/std."""
    x = clips.permute(0, 4, 1, 2, 3).float().div_(255)
    mean, std = _stats(x.device)
    return (x - mean) / std


def _stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The Kinetics mean and std as (1, 3, 1, 1, 1) float32 on ``device`` (two 12-byte copies
    per batch of clips; no cache outlives the call)."""
    return (torch.tensor(VIDEO_MEAN, device=device).view(1, 3, 1, 1, 1),
            torch.tensor(VIDEO_STD, device=device).view(1, 3, 1, 1, 1))


def teacher(*, weights=None, num_classes: int = 400) -> Teacher:
    """R(2+1)D-18 in eval mode.

    ``weights``: None (random init: tests, FLOP counts), ``"kinetics"`` (torchvision's
    Kinetics-400 weights, from the torch hub cache; downloaded once when online), or a path to a
    state dict of ``r2plus1d_18`` with ``num_classes`` outputs (e.g. one fine-tuned on the target
    data set).  Missing weights raise ``WeightsError`` saying what to pass."""
    net = r2plus1d_18(num_classes=num_classes)
    if weights is not None:
        if isinstance(weights, R2Plus1D_18_Weights) or str(weights).lower() == "kinetics":
            if num_classes != len(KINETICS.meta["categories"]):
                raise WeightsError(f"the Kinetics-400 teacher has 400 classes, not {num_classes}")
            state = load_torchvision_weights(KINETICS, hint=NO_WEIGHTS_HINT)
        else:
            state = load_state_file(weights, what="teacher")
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsError(f"{weights}: not an r2plus1d_18 state dict with {num_classes} "
                               f"classes ({str(e).splitlines()[0]})") from None
    return Teacher(net).eval()


def teacher_classes(num_classes: int = 400) -> list[str]:
    """Kinetics-400 class names when the teacher has 400 outputs, else ``teacher_0``, ..."""
    cats = KINETICS.meta["categories"]
    return list(cats) if num_classes == len(cats) else [f"teacher_{i}" for i in range(num_classes)]


def weights_fingerprint(weights) -> str:
    """What identifies ``weights`` in a cache key: ``"kinetics400_v1"``, ``"random"`` or the
    sha256 (16 hex) of a local file's bytes."""
    import hashlib
    if weights is None:
        return "random"
    if isinstance(weights, R2Plus1D_18_Weights) or str(weights).lower() == "kinetics":
        return "kinetics400_v1"
    if not os.path.isfile(weights):
        raise WeightsError(f"{weights}: no such teacher weights file; {NO_WEIGHTS_HINT}")
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]

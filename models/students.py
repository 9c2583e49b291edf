"""IMGAUD2VID student networks: the image trunk, the audio trunk, the fusion Psi and a classifier.

What is here: keyword-only factories on torchvision's ResNet-18 building blocks, ``StudentNet``
(the four parts together, taking stored inputs as they are), and checkpoint save/load with a
content hash.  What is not: training (``training/student.py``), running a student over a store
(``stages/features.py``), the teacher (``models/teacher.py``) and costs (``models/cost.py``).

Inputs as the store keeps them: frames (B, 112, 112, 3) uint8 RGB; log-mel (B, 101, 40) float16,
time x band, natural log.  Every trunk and Psi produce 512-d float32 vectors.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from ..core.errors import ConfigError, L2LError
from ..core.grid import FEATURE_DIM, LOGMEL_BANDS, LOGMEL_FRAMES  # noqa: F401 (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOGMEL_SHAPE = (LOGMEL_FRAMES, LOGMEL_BANDS)   # time frames x mel bands
CHECKPOINT_NAME = "student.pt"    # what ``train-student`` writes last in its --out folder


class WeightsError(L2LError, RuntimeError):
    """Weights that cannot be found or loaded; the message says what to pass instead."""


def load_torchvision_weights(weights, *, hint: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weight enum, from the torch hub cache (downloading it
    once when online).  Offline with no cached copy: ``WeightsError`` naming the cache path and
    ``hint`` (what to pass instead), never a bare network error."""
    from torch.hub import get_dir
    cached = Path(get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists() and os.environ.get("L2L_NO_DOWNLOAD"):
        raise WeightsError(f"{weights} is not cached at {cached} and downloads are off "
                           f"(L2L_NO_DOWNLOAD); {hint}")
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # URLError, socket errors, ... when offline
        raise WeightsError(f"{weights} is not cached at {cached} and could not be downloaded "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                           f"{hint}") from None


def load_state_file(path: str | os.PathLike, *, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file: a bare state dict or one under ``state_dict``/``model``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such {what} weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a torch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return obj


# ---- trunk weights ----------------------------------------------------------------------------
def resnet18_state(weights, *, option: str) -> dict[str, torch.Tensor] | None:
    """A resnet18 state dict for ``weights``: None or ``"random"`` -> None (random init);
    ``"imagenet"`` or a ``ResNet18_Weights`` member -> torchvision's (from the torch hub cache;
    offline and uncached: ``WeightsError`` saying to pass ``option`` PATH or random); else a
    path to a resnet18 state dict."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "random"):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        weights = ResNet18_Weights.IMAGENET1K_V1
    if isinstance(weights, ResNet18_Weights):
        return load_torchvision_weights(
            weights, hint=f"pass {option} PATH (a torchvision resnet18 state dict, e.g. saved "
                          f"with torch.save(resnet18(weights='IMAGENET1K_V1').state_dict(), PATH) "
                          f"on a machine online) or {option} random")
    return load_state_file(weights, what=f"{option} resnet18")


def _load_into(net: nn.Module, state: dict, weights, *, skip: tuple[str, ...]) -> None:
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WeightsError(f"{weights}: not a resnet18 state dict "
                           f"({str(e).splitlines()[0]})") from None
    missing = [k for k in missing if not k.startswith(skip)]
    if missing or unexpected:
        raise WeightsError(f"{weights}: not a resnet18 state dict (missing {missing[:2]}, "
                           f"unexpected {unexpected[:2]})")


# ---- image trunk ------------------------------------------------------------------------------
def image_trunk(*, weights=None) -> nn.Module:
    """ResNet-18 to its global average pool: (B, 3, 112, 112) float, ImageNet-normalised ->
    (B, 512).  ``weights``: None or ``"random"`` (random init), ``"imagenet"`` or a torchvision
    ``ResNet18_Weights`` member, or a path to a resnet18 state dict (its ``fc`` is ignored)."""
    net = resnet18()
    net.fc = nn.Identity()
    state = resnet18_state(weights, option="--image-weights")
    if state is not None:
        _load_into(net, state, weights, skip=("fc.",))
    return net


# ---- audio trunk ------------------------------------------------------------------------------
def _resnet_out_len(n: int, conv1_stride: int) -> int:
    """Length of one input axis after ResNet-18's stem (7x7 conv, 3x3/2 max pool) and its three
    stride-2 stages."""
    n = (n + 2 * 3 - 7) // conv1_stride + 1
    for _ in range(4):
        n = (n + 2 * 1 - 3) // 2 + 1
    return n


class AudioTrunk(nn.Module):
    """ResNet-18 on a 1-channel (101 time x 40 band) log-mel; pools the band axis first (a learned
    weighting of the band positions left after the ResNet blocks, starting as their mean), then
    time, last (average: the paper's text; max: the authors' code).  (B, 1, 101, 40) float ->
    (B, 512).

    ``weights`` as for ``image_trunk``: everything but the 1-channel ``conv1`` comes from the
    resnet18 state dict, as the authors did (their ``AudioNet`` keeps ImageNet's bn1 and
    layer1-4 and makes a new 1-channel conv1, drawn from N(0, 0.02)); random init draws conv1
    with Kaiming's rule like the rest of the ResNet."""

    def __init__(self, *, conv1_stride: int = 1, time_pool: str = "avg",
                 input_shape: tuple[int, int] = LOGMEL_SHAPE, weights=None):
        super().__init__()
        if time_pool not in ("avg", "max"):
            raise ConfigError(f"time_pool must be 'avg' or 'max', not {time_pool!r}")
        r = resnet18()
        state = resnet18_state(weights, option="--audio-weights")
        if state is not None:
            _load_into(r, state, weights, skip=("fc.", "conv1."))
        # stem: one input channel (the authors' code also uses stride 1 on the small spectrogram)
        conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=conv1_stride, padding=3, bias=False)
        if state is None:
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.normal_(conv1.weight, 0.0, 0.02)
        self.body = nn.Sequential(conv1, r.bn1, r.relu, r.maxpool,
                                  r.layer1, r.layer2, r.layer3, r.layer4)
        # head: band positions after the blocks -> 1, then time -> 1
        bands = _resnet_out_len(input_shape[1], conv1_stride)
        self.band_pool = nn.Linear(bands, 1)
        nn.init.constant_(self.band_pool.weight, 1.0 / bands)
        nn.init.zeros_(self.band_pool.bias)
        self.time_pool = time_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)                          # (B, 512, T', F')
        x = self.band_pool(x).squeeze(-1)         # (B, 512, T'): band reduced first
        if self.time_pool == "avg":               # time reduced last
            return x.mean(dim=-1)
        return x.amax(dim=-1)


def audio_trunk(*, conv1_stride: int = 1, time_pool: str = "avg", weights=None) -> AudioTrunk:
    """The audio trunk: (B, 1, 101, 40) log-mel -> (B, 512).  See ``AudioTrunk``."""
    return AudioTrunk(conv1_stride=conv1_stride, time_pool=time_pool, weights=weights)


# ---- fusion -----------------------------------------------------------------------------------
class Fusion(nn.Module):
    """Psi: Linear(1024, 1024) - ReLU - Linear(1024, 512) on [image; audio] -> (B, 512)."""

    def __init__(self, *, dim: int = FEATURE_DIM, hidden: int = 2 * FEATURE_DIM):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim))

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([image, audio], dim=-1))


# ---- the student --------------------------------------------------------------------------
class StudentNet(nn.Module):
    """Image trunk + audio trunk + Psi + a linear classifier on the fused embedding."""

    def __init__(self, *, num_classes: int, image_weights=None, audio_weights=None,
                 conv1_stride: int = 1, time_pool: str = "avg"):
        super().__init__()
        self.image_trunk = image_trunk(weights=image_weights)
        self.audio_trunk = audio_trunk(conv1_stride=conv1_stride, time_pool=time_pool,
                                       weights=audio_weights)
        self.fusion = Fusion()
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255,
                             persistent=False)

    def image_input(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 112, 112, 3) uint8 RGB -> (B, 3, 112, 112) float, ImageNet-normalised."""
        x = frames.permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    def forward(self, frames: torch.Tensor, logmel: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, 112, 112, 3) uint8; logmel (B, 101, 40) float (any float dtype) ->
        ``image``, ``audio``, ``imageaudio`` (B, 512) and ``logits`` (B, C)."""
        image = self.image_trunk(self.image_input(frames))
        audio = self.audio_trunk(logmel.unsqueeze(1).to(image.dtype))
        fused = self.fusion(image, audio)
        return {"image": image, "audio": audio, "imageaudio": fused,
                "logits": self.classifier(fused)}


def build_student(*, num_classes: int, image_weights=None, audio_weights=None,
                  conv1_stride: int = 1, time_pool: str = "avg") -> StudentNet:
    """A fresh student; ``image_weights`` / ``audio_weights`` as for ``image_trunk`` /
    ``AudioTrunk`` (default: random init; the trainer defaults to ImageNet for both)."""
    return StudentNet(num_classes=num_classes, image_weights=image_weights,
                      audio_weights=audio_weights, conv1_stride=conv1_stride, time_pool=time_pool)


# ---- checkpoints ------------------------------------------------------------------------------
def content_hash(state_dict: dict[str, torch.Tensor], config: dict, classes: list[str]) -> str:
    """sha256 (16 hex) of the weights' bytes (in key order), the config and the classes."""
    from ..core.hashing import stable_hash
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(stable_hash({"config": config, "classes": list(classes)}, 64).encode())
    return h.hexdigest()[:16]


def model_kwargs(model: StudentNet) -> dict:
    """The architecture arguments ``build_student`` needs to rebuild ``model``."""
    return {"num_classes": model.classifier.out_features,
            "conv1_stride": model.audio_trunk.body[0].stride[0],
            "time_pool": model.audio_trunk.time_pool}


def save_student(model: StudentNet, path, *, config: dict, classes: list[str],
                 extra: dict[str, Any] | None = None) -> str:
    """Write ``{config, classes, model, state_dict, hash}`` (plus ``extra``, e.g. optimiser state)
    to ``path`` atomically; return the content hash (which ``extra`` does not enter)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    digest = content_hash(state, config, classes)
    obj = {"format": "l2l-student/1", "config": config, "classes": list(classes),
           "model": model_kwargs(model), "state_dict": state, "hash": digest, **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return digest


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or in a ``train-student`` folder its ``student.pt`` (else the latest
    ``checkpoints/epoch-*.pt``)."""
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_NAME).is_file():
            return path / CHECKPOINT_NAME
        found = sorted((path / "checkpoints").glob("epoch-*.pt"))
        if not found:
            raise WeightsError(f"{path}: no {CHECKPOINT_NAME} or checkpoints/epoch-*.pt in it")
        return found[-1]
    if not path.is_file():
        raise WeightsError(f"{path}: no such student checkpoint")
    return path


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict at ``path`` (file or train-student folder), with ``path`` added."""
    path = resolve_checkpoint(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a student checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != "l2l-student/1":
        raise WeightsError(f"{path}: not a student checkpoint (no l2l-student/1 format tag)")
    obj["path"] = str(path)
    return obj


def read_checkpoint_hash(path) -> str:
    """The hash stored in a checkpoint (file or folder), without reading its weights (the
    tensors are memory-mapped, not read)."""
    path = resolve_checkpoint(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a student checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or "hash" not in obj:
        raise WeightsError(f"{path}: not a student checkpoint (no hash)")
    return obj["hash"]


def load_student(path) -> tuple[StudentNet, dict]:
    """The student saved at ``path`` (a file or a ``train-student`` folder), in eval mode, and
    ``{config, classes, hash, path, ...}``.  The stored hash is checked against the content."""
    obj = read_checkpoint(path)
    state = obj.pop("state_dict")
    if content_hash(state, obj["config"], obj["classes"]) != obj["hash"]:
        raise WeightsError(f"{obj['path']}: content does not match its hash (corrupt or edited)")
    model = build_student(**obj["model"])
    model.load_state_dict(state)
    model.eval()
    return model, obj

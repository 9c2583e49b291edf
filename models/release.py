"""The authors' image-audio checkpoint (``ImageAudioNet_ActivityNet.pth``), read and written.

Their ``utils/checkpointer.py`` (``Checkpointer.save``) writes ``{"epoch", "model", "namespace"}``
(optionally ``optimizer`` / ``scheduler``): ``model`` is the state dict of their
``ImageAudioClassifyModel`` (``models/imageAudioClassify_model.py``), whose keys are

    net_imageAudio.imageAudio_fc1.{weight (1024, 1024), bias (1024,)}   their ImageAudioModel
    net_imageAudio.imageAudio_fc2.{weight (512, 1024), bias (512,)}     (models/imageAudio_model.py)
    net_classifier.classifier.{weight (K, 512), bias (K,)}              their ClassifierNet (networks.py)

possibly each with a ``module.`` prefix (a ``DataParallel`` model; their
``utils/model_serialization.py`` strips it too), and ``namespace`` is the ``argparse.Namespace``
of the run.  Their Psi is l2l's ``Fusion`` exactly: Linear(1024, 1024), ReLU, Linear(1024, 512)
on [image; audio] (``ImageAudioModel.forward``), so ``fusion.mlp.0`` / ``.2`` take fc1 / fc2.

``load_release_head`` reads it with ``torch.load(weights_only=True)``, allowing only
``argparse.Namespace`` beyond tensors and plain data, and puts the classifier's rows into the
store's class order (``class_order[i]`` is the class of their int i, inferred at import).
``save_release_head`` writes a student's Psi and classifier the same way, for their
``main.py --weights_audioImageModel``.  What is not here: their features (``datasets/
listen_to_look.py``), skimming.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from types import MappingProxyType
from typing import Sequence

import torch
from torch import nn

from ..core.errors import L2LError
from ..core.grid import FEATURE_DIM
from .students import Fusion

KEYS = MappingProxyType({"fusion.mlp.0.weight": "net_imageAudio.imageAudio_fc1.weight",
        "fusion.mlp.0.bias": "net_imageAudio.imageAudio_fc1.bias",
        "fusion.mlp.2.weight": "net_imageAudio.imageAudio_fc2.weight",
        "fusion.mlp.2.bias": "net_imageAudio.imageAudio_fc2.bias",
        "classifier.weight": "net_classifier.classifier.weight",
        "classifier.bias": "net_classifier.classifier.bias"})   # (read-only: a table)


class ReleaseCheckpointError(L2LError, ValueError):
    """A checkpoint of the authors' format that cannot be used here; one line naming the file."""


class ReleaseHead(nn.Module):
    """Their Psi and classifier under the names a student has (``fusion``, ``classifier``), so
    that ``skim_from_student`` takes them over like a trained student's."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fusion = Fusion()
        self.classifier = nn.Linear(FEATURE_DIM, num_classes)


def read_release_file(path) -> dict | None:
    """The checkpoint dict if ``path`` is one of the authors' format (a ``model`` dict holding
    ``net_imageAudio`` keys), else None.  Loaded with ``weights_only=True``, allowing
    ``argparse.Namespace``; a file torch cannot read that way raises ``ReleaseCheckpointError``."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ReleaseCheckpointError(f"{path}: not a checkpoint torch can load safely "
                                     f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    model = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not any("net_imageAudio." in k for k in model):
        return None
    return obj


def load_release_head(path, *, classes: Sequence[str], class_order: Sequence[str] | None,
                      obj: dict | None = None) -> tuple[ReleaseHead, dict]:
    """Their checkpoint at ``path`` as a ``ReleaseHead`` over ``classes`` (the store's order),
    in eval mode, and ``{path, hash, classes, epoch}`` (``hash``: sha256 of the file, 16 hex).
    ``class_order``: the class name of each of their ints (the store's ``release`` info)."""
    path = Path(path)
    obj = obj if obj is not None else read_release_file(path)
    if obj is None:
        raise ReleaseCheckpointError(f"{path}: not an ImageAudioClassifyModel checkpoint "
                                     "(no net_imageAudio.* keys under 'model')")
    state = dict(obj["model"])
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing = [k for k in KEYS.values() if k not in state]
    if missing:
        raise ReleaseCheckpointError(f"{path}: lacks {missing[0]} (an ImageAudioClassifyModel "
                                     "state dict has net_imageAudio.imageAudio_fc1/fc2 and "
                                     "net_classifier.classifier)")
    n = int(state[KEYS["classifier.weight"]].shape[0])
    if n != len(classes):
        raise ReleaseCheckpointError(f"{path}: its classifier has {n} classes, the store has "
                                     f"{len(classes)}")
    if class_order is None:
        raise ReleaseCheckpointError(f"{path}: the store records no class order for the "
                                     "authors' int labels (import their features with `l2l store "
                                     "import --format listen-to-look` to use their checkpoint)")
    if sorted(class_order) != sorted(classes):
        raise ReleaseCheckpointError(f"{path}: the store's release class order does not hold "
                                     "the store's classes")
    rows = torch.tensor([list(class_order).index(c) for c in classes])
    head = ReleaseHead(n)
    ours = {k: state[v] for k, v in KEYS.items()}
    ours["classifier.weight"] = ours["classifier.weight"][rows]
    ours["classifier.bias"] = ours["classifier.bias"][rows]
    try:
        head.load_state_dict({k: v.float() for k, v in ours.items()})
    except RuntimeError as e:
        raise ReleaseCheckpointError(f"{path}: shapes do not fit their ImageAudioClassifyModel "
                                     f"({str(e).splitlines()[-1].strip()})") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return head.eval(), {"path": str(path), "hash": digest, "classes": list(classes),
                         "epoch": obj.get("epoch"), "format": "listen-to-look"}


def save_release_head(student: nn.Module, path, *, classes: Sequence[str],
                      class_order: Sequence[str], note: dict | None = None) -> Path:
    """Write ``student``'s Psi (``fusion``) and classifier as their ``ImageAudioClassifyModel``
    checkpoint, rows in ``class_order`` (their int i = ``class_order[i]``), to ``path``
    atomically; ``note`` goes into the ``namespace``.  Their ``Checkpointer.load_model_only``
    loads it (``main.py --weights_audioImageModel``)."""
    sd = student.state_dict()
    rows = torch.tensor([list(classes).index(c) for c in class_order])
    model = {v: sd[k].detach().cpu().float().clone() for k, v in KEYS.items()}
    for k in ("net_classifier.classifier.weight", "net_classifier.classifier.bias"):
        model[k] = model[k][rows].contiguous()
    ns = argparse.Namespace(num_classes=len(class_order), **(note or {}))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"epoch": 0, "model": model, "namespace": ns}, tmp)
    os.replace(tmp, path)
    return path


def load_any_student(path, *, classes: Sequence[str], class_order: Sequence[str] | None):
    """What ``train-skim --student`` takes: a ``train-student`` checkpoint (file or folder), or
    the authors' ``ImageAudioClassifyModel`` file (``load_release_head``).  Returns (module with
    ``fusion`` and ``classifier``, info with ``path``, ``hash``, ``classes``)."""
    from .students import load_student
    if Path(path).is_file():
        obj = read_release_file(path)
        if obj is not None:
            return load_release_head(path, classes=classes, class_order=class_order, obj=obj)
    return load_student(path)

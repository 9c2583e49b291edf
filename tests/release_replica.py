"""A small replica of the authors' ActivityNet release, written by the tests themselves.

``write_replica(root)`` writes, under ``root``: ``activity_net.v1-3.min.json`` (an ActivityNet
v1.3 file with a taxonomy), and ``release/`` in their layout: ``image_features/``,
``audio_features/``, ``imageAudio_features/`` (``v_<id>.npy``, (N, 512) float32), ``train.pkl``
and ``val.pkl`` (paths under the authors' root, ints in a shuffled class order) and
``ImageAudioNet_ActivityNet.pth`` in their checkpoint format (``module.``-prefixed keys, an
``argparse.Namespace``, saved in torch's legacy format as their PyTorch 1.0.1 wrote it).

The features carry each video's class as a block of 8 raised dimensions (block = its int), in
image and audio alike; the checkpoint's Psi is relu(x) summed over the two modalities and its
classifier reads the blocks in their int order, so their head classifies every video as its int
says: a wrong row order after import shows up as a wrong class.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch

CLASSES = ("Archery", "Ballet", "Capoeira", "Drum corps", "Elliptical trainer")
AUTHORS_ROOT = "/mnt/rhgao/ActivityNet/imageAudio_features"


def write_replica(root: Path, *, videos: int = 150, seed: int = 0, rows=(12, 40)) -> dict:
    """Write the replica; returns ``{release, annotations, checkpoint, order, ints}`` (``order``:
    class name of each int; ``ints``: video id -> int)."""
    from l2l.datasets.activitynet import write_activitynet_json
    from l2l.datasets.base import VideoRecord
    rng = np.random.default_rng(seed)
    root = Path(root)
    rel = root / "release"
    order = list(CLASSES)
    while order == sorted(order):
        rng.shuffle(order)
    records, segments, ints = [], {}, {}
    lists = {"train.pkl": ([], []), "val.pkl": ([], [])}
    for d in ("image_features", "audio_features", "imageAudio_features"):
        (rel / d).mkdir(parents=True, exist_ok=True)
    for i in range(videos):
        vid = f"r{i:03d}_{rng.integers(1 << 30):x}"[:11]
        cls = CLASSES[i % len(CLASSES)]
        lab = order.index(cls)
        subset = "training" if i % 3 else "validation"
        n = int(rng.integers(*rows))
        records.append(VideoRecord(vid, None, (cls,), subset, duration=n * 16 / 30.0))
        segments[vid] = [(0.0, n * 16 / 30.0, cls)]
        ints[vid] = lab
        feats = {}
        for d in ("image_features", "audio_features"):
            a = rng.normal(0, 0.1, (n, 512)).astype(np.float32)
            a[:, 8 * lab:8 * lab + 8] += 1.0
            feats[d] = a
        feats["imageAudio_features"] = (np.maximum(feats["image_features"], 0)
                                        + np.maximum(feats["audio_features"], 0)).astype(np.float32)
        for d, a in feats.items():
            np.save(rel / d / f"v_{vid}.npy", a)
        name = "train.pkl" if subset == "training" else "val.pkl"
        lists[name][0].append(f"{AUTHORS_ROOT}/v_{vid}.npy")
        lists[name][1].append(lab)
    for name, (paths, labels) in lists.items():
        with open(rel / name, "wb") as f:
            pickle.dump((paths, labels), f, protocol=3)
    ann = write_activitynet_json(root / "activity_net.v1-3.min.json", records, segments,
                                 classes=list(CLASSES))
    ck = write_checkpoint(rel / "ImageAudioNet_ActivityNet.pth", num_classes=len(CLASSES))
    return {"release": rel, "annotations": ann, "checkpoint": ck, "order": order, "ints": ints}


def write_checkpoint(path: Path, *, num_classes: int, prefix: str = "module.") -> Path:
    """Their ImageAudioClassifyModel checkpoint: Psi = relu([image; audio]) folded to
    image + audio, classifier row j = the 8 dimensions of int j."""
    fc1 = torch.eye(1024)
    fc2 = torch.cat([torch.eye(512), torch.eye(512)], 1)
    cls = torch.zeros(num_classes, 512)
    for j in range(num_classes):
        cls[j, 8 * j:8 * j + 8] = 1.0
    model = {"net_imageAudio.imageAudio_fc1.weight": fc1,
             "net_imageAudio.imageAudio_fc1.bias": torch.zeros(1024),
             "net_imageAudio.imageAudio_fc2.weight": fc2,
             "net_imageAudio.imageAudio_fc2.bias": torch.zeros(512),
             "net_classifier.classifier.weight": cls,
             "net_classifier.classifier.bias": torch.zeros(num_classes)}
    ns = argparse.Namespace(num_classes=num_classes, lr=0.001, milestones=[30, 50],
                            batch_size=16, feature_extraction=False, weights_audioImageModel="")
    torch.save({"epoch": 59, "model": {prefix + k: v for k, v in model.items()}, "namespace": ns},
               path, _use_new_zipfile_serialization=False)
    return path

"""The authors' ActivityNet feature release (facebookresearch/Listen-to-Look, README
"Preparation"), read and written as files: no store, no model.

The layout, as their ``data.py`` reads it::

    DIR/imageAudio_features/v_<id>.npy   (N, 512) float32: Psi's output, one row per moment
    DIR/image_features/v_<id>.npy        (N, 512) float32: the image trunk's
    DIR/audio_features/v_<id>.npy        (N, 512) float32: the audio trunk's
    DIR/train.pkl, DIR/val.pkl           pickle of (list of imageAudio paths, list of int labels)

Their ``data.py`` (``AudioVisualDataset.__getitem__``) derives the image and audio paths from the
imageAudio path by replacing the folder name; the paths in the released pickles start with the
authors' own root, so here each is resolved by its file name under ``DIR``.

The ints' class order is not published.  ``infer_class_order`` recovers it from the ActivityNet
annotation file: all videos with one int must share one class name, and two ints cannot share
one.  ``classes.txt`` beside the pickles (written by ``write_release``: line i is the class of
int i) settles it when present.  Pickles are read by ``load_pickle``, which builds lists,
tuples, strings and ints only: a pickle that names any global (the way a pickle runs code)
stops with one line.

What is not here: putting the arrays into a store (``pipeline/release.py``), their checkpoint
(``models/release.py``).
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
from pathlib import Path
from typing import Mapping, Sequence

from ..core.errors import L2LError
from .base import Dataset

FOLDERS = {"imageaudio": "imageAudio_features", "image": "image_features", "audio": "audio_features"}
PICKLES = {"training": "train.pkl", "validation": "val.pkl"}
CLASS_ORDER_FILE = "classes.txt"
RELEASE = "facebookresearch/Listen-to-Look ActivityNet features (README: Preparation)"


class ReleaseError(L2LError, ValueError):
    """A release folder, pickle or label list that cannot be used; one line naming the file."""


class _OnlyPlainData(pickle.Unpickler):
    """Builds lists, tuples, dicts of those, strings and numbers only.  Every way a pickle calls
    code (GLOBAL / STACK_GLOBAL, then REDUCE, BUILD, INST, OBJ, NEWOBJ) first looks a name up
    with ``find_class``, and persistent ids go through ``persistent_load``: both refuse."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only lists, strings and ints "
                                     "are allowed (a pickle that names a global can run code)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent id; only lists, strings and ints are allowed")


def load_pickle(path: Path) -> tuple[list[str], list[int]]:
    """``(paths, labels)`` from one of their pickles, read without running code: a pickle that
    names a global, or holds anything but a pair of equally long lists of strings and ints,
    raises ``ReleaseError``."""
    path = Path(path)
    try:
        obj = _OnlyPlainData(io.BytesIO(path.read_bytes())).load()
    except OSError as e:
        raise ReleaseError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:          # UnpicklingError, EOFError, ValueError... on a bad file
        raise ReleaseError(f"{path}: refused: {' '.join(str(e).split())}") from None
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2
            and all(isinstance(x, (list, tuple)) for x in obj)):
        raise ReleaseError(f"{path}: not a pair (list of feature paths, list of int labels)")
    paths, labels = list(obj[0]), list(obj[1])
    if len(paths) != len(labels):
        raise ReleaseError(f"{path}: {len(paths)} paths but {len(labels)} labels")
    for i, (p, lab) in enumerate(zip(paths, labels)):
        if not isinstance(p, str) or not isinstance(lab, int) or isinstance(lab, bool):
            raise ReleaseError(f"{path}: entry {i} is ({type(p).__name__}, {type(lab).__name__}), "
                               "expected (str, int)")
    return paths, labels


def video_id(feature_path: str, where) -> str:
    """The ActivityNet id of a feature file name ``v_<id>.npy`` (``<id>.npy`` also accepted)."""
    name = feature_path.replace("\\", "/").rsplit("/", 1)[-1]
    if not name.endswith(".npy") or len(name) <= 4:
        raise ReleaseError(f"{where}: {feature_path!r} is not a .npy feature file")
    stem = name[:-4]
    return stem[2:] if stem.startswith("v_") else stem


@dataclasses.dataclass(frozen=True)
class ReleaseVideo:
    id: str                      # ActivityNet id (the annotation file's key, no "v_")
    label: int                   # the int their pickle gives it
    pickle: str                  # "train.pkl" or "val.pkl"
    files: Mapping[str, Path]    # field (image, audio, imageaudio) -> .npy under DIR


@dataclasses.dataclass(frozen=True)
class Release:
    source: Path
    videos: tuple[ReleaseVideo, ...]
    class_order: tuple[str, ...]     # class_order[i]: the class name of int label i


def read_release(source: Path, dataset: Dataset) -> Release:
    """The videos both pickles list, each resolved to its three files under ``source`` by file
    name, and the ints' class order inferred from ``dataset`` (the annotation file's).  Checks
    only what the pickles and annotations say; the .npy files are opened by the importer."""
    source = Path(source)
    if not source.is_dir():
        raise ReleaseError(f"{source}: not a folder (the release's features and pickles)")
    known = {v.id: v for v in dataset.videos}
    videos, seen = [], {}
    for subset, name in PICKLES.items():
        pkl = source / name
        if not pkl.is_file():
            raise ReleaseError(f"{pkl}: missing (the release lists its {subset} videos in it)")
        paths, labels = load_pickle(pkl)
        for p, lab in zip(paths, labels):
            vid = video_id(p, pkl)
            if vid not in known:
                raise ReleaseError(f"{pkl}: video v_{vid} is not in the annotation file")
            if vid in seen:
                raise ReleaseError(f"{pkl}: video v_{vid} is listed twice (also in {seen[vid]})")
            seen[vid] = name
            fname = p.replace("\\", "/").rsplit("/", 1)[-1]
            videos.append(ReleaseVideo(vid, lab, name, {f: source / d / fname for f, d in FOLDERS.items()}))
    if not videos:
        raise ReleaseError(f"{source}: the pickles list no videos")
    given = None
    if (source / CLASS_ORDER_FILE).is_file():
        given = [ln.strip() for ln in (source / CLASS_ORDER_FILE).read_text().splitlines() if ln.strip()]
    order = infer_class_order([(v.id, v.label, known[v.id].labels) for v in videos],
                              dataset.classes, source=source, given=given)
    return Release(source, tuple(videos), order)


def infer_class_order(videos: Sequence[tuple[str, int, Sequence[str]]], classes: Sequence[str], *,
                      source, given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The class name of every int 0..K-1 (K = len(classes)), from (video id, int, annotated
    class names) triples: an int's class is the one name all its videos carry, no two ints share
    one, and an int no video has gets the one class left over, if only one is.  ``given`` (a
    class-order file) narrows each int to its line.  Anything else: ``ReleaseError`` naming an
    example video."""
    k = len(classes)
    cand: dict[int, set[str]] = {}
    example: dict[int, str] = {}
    for vid, lab, names in videos:
        if not 0 <= lab < k:
            raise ReleaseError(f"{source}: video v_{vid} has int label {lab}, outside 0..{k - 1} "
                               f"(the annotation file has {k} classes)")
        if not names:
            raise ReleaseError(f"{source}: video v_{vid} has int label {lab} but no class in the "
                               "annotation file")
        before = cand.get(lab)
        cand[lab] = set(names) if before is None else before & set(names)
        example.setdefault(lab, vid)
        if not cand[lab]:
            raise ReleaseError(
                f"{source}: inconsistent labels: video v_{vid} has int {lab} and class(es) "
                f"{sorted(names)}, but video v_{example[lab]} also has int {lab} and class(es) "
                f"{sorted(before)}")
    if given is not None:
        if len(given) != k:
            raise ReleaseError(f"{source}/{CLASS_ORDER_FILE}: {len(given)} classes, the annotation "
                               f"file has {k}")
        for lab in cand:
            if given[lab] not in cand[lab]:
                raise ReleaseError(f"{source}/{CLASS_ORDER_FILE}: int {lab} is {given[lab]!r}, but "
                                   f"video v_{example[lab]} with int {lab} has {sorted(cand[lab])}")
            cand[lab] = {given[lab]}
    order: dict[int, str] = {}
    changed = True
    while changed:                      # assign the ints with one candidate, remove it elsewhere
        changed = False
        for lab, names in cand.items():
            if lab in order:
                continue
            names -= set(order.values())
            if not names:
                raise ReleaseError(f"{source}: inconsistent labels: every class of video "
                                   f"v_{example[lab]} (int {lab}) is already another int's")
            if len(names) == 1:
                order[lab] = next(iter(names))
                changed = True
    open_ints = [lab for lab in range(k) if lab not in order]
    left = [c for c in classes if c not in set(order.values())]
    if len(open_ints) == 1 and len(left) == 1 and open_ints[0] not in cand:
        order[open_ints[0]] = left[0]
        open_ints = []
    if open_ints:
        lab = open_ints[0]
        if lab in cand:
            raise ReleaseError(f"{source}: ambiguous labels: int {lab} could be any of "
                               f"{sorted(cand[lab])} (e.g. video v_{example[lab]}); put the "
                               f"class order in {CLASS_ORDER_FILE} beside the pickles")
        raise ReleaseError(f"{source}: ambiguous labels: {len(open_ints)} int(s) (e.g. {lab}) "
                           f"label no video, so their classes cannot be inferred; put the class "
                           f"order in {CLASS_ORDER_FILE} beside the pickles")
    return tuple(order[lab] for lab in range(k))


def write_pickle(path: Path, paths: Sequence[str], labels: Sequence[int]) -> None:
    """``(paths, labels)`` as their ``data.py`` reads it (protocol 3: their Python 3.7 reads
    it), written under a temporary name and renamed."""
    tmp = Path(f"{path}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump((list(map(str, paths)), [int(x) for x in labels]), f, protocol=3)
    os.replace(tmp, path)

"""The authors' ActivityNet feature release into an l2l store, and any l2l store out into it.

``import_release``: their per-video ``image``, ``audio`` and ``imageAudio`` .npy files (as the
pickles list them) become the store's ``image``, ``audio`` and ``imageaudio`` arrays, with the
release's dtype and bytes unchanged; ids, labels, subsets and durations come from the
ActivityNet annotation file; the ints' class order inferred from it
(``datasets.listen_to_look.infer_class_order``) is kept in the store's info (``release``), where
``train-skim --student THEIR.pth`` finds it.  Everything the pickles and annotations say is
checked before the store is created or touched: a pickle that would run code, labels that are
inconsistent or ambiguous stop with one line and nothing written.  A video whose files are
missing or malformed is recorded as a failure (stage ``import``) and the import goes on.

Provenance: stage ``import``; config ``{format, release, folder}`` (one per array name, so
``store verify`` sees no mixed configs); upstream ``{file: <folder>/v_<id>.npy, sha256: of the
array's bytes}``; the key is their hash, so the same bytes imported from anywhere get the same
key.  Moments: one row per moment, every 16 frames (supplement, Sec. B); ``fps`` is estimated
as 16 x rows / the annotated duration (the release states no frame rate); ``source`` is empty
(there is no media file; the provenance names the .npy).

``export_release``: a store's ``image``/``audio``/``imageaudio`` arrays as their layout (the
store's dtype), ``train.pkl``/``val.pkl`` with absolute paths and ints, ``classes.txt`` (line i:
the class of int i; the release's order when the store was imported from it, else the store's),
and with ``student`` that student's Psi and classifier as their checkpoint.  Only labelled
``training`` and ``validation`` videos go into the pickles (their code needs one int each; a
video with several labels gets its first).

What is not here: file formats (``datasets/listen_to_look.py``, ``models/release.py``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.hashing import stable_hash
from ..datasets.activitynet import parse_activitynet
from ..datasets.listen_to_look import (CLASS_ORDER_FILE, FOLDERS, PICKLES, RELEASE, Release,
                                       ReleaseError, read_release, write_pickle)
from ..store import (ArrayRecord, Failure, Put, VideoMeta, create_store, library_versions,
                     open_store, recorded_backend)

FORMAT = "listen-to-look"
STAGE = "import"
MOMENT_FRAMES = 16
SHARD_BYTES = 256 << 20          # stage a parcel every this many bytes of arrays
COMMIT_VIDEOS = 2048             # and commit every this many videos


def _read_video(v, versions) -> tuple[dict, dict]:
    """The three arrays of one release video and their records; ``ReleaseError`` if a file is
    missing, not a 2-D float array, or its rows disagree with the others'."""
    arrays, records = {}, {}
    for field in ("image", "audio", "imageaudio"):
        path = v.files[field]
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ReleaseError(f"{path}: cannot read: {' '.join(str(e).split())}") from None
        if a.ndim != 2 or a.dtype.kind != "f" or len(a) == 0:
            raise ReleaseError(f"{path}: {a.dtype} array of shape {a.shape}, expected (N, D) float")
        a = np.ascontiguousarray(a)
        if arrays and a.shape != arrays["image"].shape:
            raise ReleaseError(f"{path}: shape {a.shape}, but {v.files['image'].name} in "
                               f"{FOLDERS['image']} has {arrays['image'].shape}")
        config = {"format": FORMAT, "release": RELEASE, "folder": FOLDERS[field]}
        upstream = {"file": f"{FOLDERS[field]}/{path.name}",
                    "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
        key = stable_hash({"stage": STAGE, "config": config, "upstream": upstream})
        arrays[field] = a
        records[field] = ArrayRecord(stage=STAGE, config=config, key=key, upstream=upstream,
                                     versions=versions, shape=a.shape, dtype=str(a.dtype))
    return arrays, records


def _check_target(store_path: Path, classes: list[str], release: Release) -> None:
    """An existing store must hold the same data set and class order; checked before writing."""
    if not store_path.exists() or recorded_backend(store_path) is None:
        return
    info = open_store(store_path).info()
    if info.get("classes") not in (None, classes):
        raise ReleaseError(f"{store_path}: holds data set {info.get('dataset')!r} with another "
                           "class list; import into a new store")
    old = (info.get("release") or {}).get("class_order")
    if old is not None and list(old) != list(release.class_order):
        raise ReleaseError(f"{store_path}: holds a release imported with another int class order")


def import_release(store_path, source, annotations, *, progress: bool = False) -> dict:
    """Import the release at ``source`` into the store at ``store_path`` (created if needed).
    Returns ``{"videos", "failed", "moments", "class_order"}``."""
    store_path, source = Path(store_path), Path(source)
    ds = parse_activitynet(Path(annotations), None)
    release = read_release(source, ds)                 # every refusal happens before writing
    classes = list(ds.classes)
    _check_target(store_path, classes, release)
    records = {v.id: v for v in ds.videos}
    st = create_store(store_path)
    versions = library_versions()
    batch, size, done, failed, moments = [], 0, 0, 0, 0
    for v in tqdm(release.videos, unit="video", desc="import", disable=not progress,
                  dynamic_ncols=True):
        try:
            arrays, recs = _read_video(v, versions)
        except ReleaseError as e:
            st.record_failure(Failure(v.id, STAGE, e.line(), source=str(v.files["imageaudio"])))
            failed += 1
            continue
        r = records[v.id]
        n = len(arrays["image"])
        fps = MOMENT_FRAMES * n / r.duration if r.duration else 0.0
        meta = VideoMeta(id=v.id, labels=r.labels, subset=r.subset, duration=r.duration or 0.0,
                         fps=fps, num_moments=n, has_audio=True, source="")   # no media file
        batch.append(Put(meta, arrays, recs, True))
        size += sum(a.nbytes for a in arrays.values())
        done += 1
        moments += n
        if size >= SHARD_BYTES:
            st.put_many(batch)
            batch, size = [], 0
        if done % COMMIT_VIDEOS == 0:
            st.put_many(batch)
            batch, size = [], 0
            st.commit()
    st.put_many(batch)
    info = st.info()
    fields = list(dict.fromkeys(list(info.get("fields", [])) + ["image", "audio", "imageaudio"]))
    st.update_info({"dataset": ds.name, "classes": classes, "fields": fields,
                    "release": {"format": FORMAT, "name": RELEASE, "source": str(source.resolve()),
                                "class_order": list(release.class_order)}})
    st.commit()
    if hasattr(st, "tidy"):
        st.tidy()
    return {"videos": done, "failed": failed, "moments": moments,
            "class_order": list(release.class_order)}


def export_release(store_path, out, *, student=None, progress: bool = False) -> dict:
    """Write the store at ``store_path`` in the release's layout under ``out`` (a new or empty
    folder).  Returns ``{"videos", "pickles": {name: count}, "skipped", "checkpoint"}``."""
    out = Path(out)
    st = open_store(store_path)
    info = st.info()
    classes = list(info.get("classes") or [])
    if not classes:
        raise ReleaseError(f"{store_path}: the store records no classes")
    order = list((info.get("release") or {}).get("class_order") or classes)
    head = None
    if student is not None:                        # checked before anything is written
        from ..models.students import load_student
        head, sinfo = load_student(student)
        if list(sinfo["classes"]) != classes:
            raise ReleaseError(f"student {student} was trained on {len(sinfo['classes'])} "
                               f"classes that differ from the store's {len(classes)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out}: exists and is not an empty folder; export writes a new one")
    ids = st.ids()
    fields = ["image", "audio", "imageaudio"]
    for vid in ids:
        lacking = [f for f in fields if f not in st.records(vid)]
        if lacking:
            raise ReleaseError(f"{store_path}: video {vid} has no {lacking[0]} array (export "
                               "needs image, audio and imageaudio features for every video)")
    index = {c: i for i, c in enumerate(order)}
    lists = {name: ([], []) for name in PICKLES.values()}
    skipped = 0
    for d in FOLDERS.values():
        (out / d).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(ids), unit="video", desc="export", disable=not progress, dynamic_ncols=True)
    for s in range(0, len(ids), 64):
        batch = st.read_many(fields, ids[s:s + 64])
        for i, vid in enumerate(batch.ids):
            paths = {}
            for f in fields:
                paths[f] = (out / FOLDERS[f] / f"v_{vid}.npy").resolve()
                tmp = paths[f].with_name(paths[f].name + ".tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(batch.video(i, f)))
                os.replace(tmp, paths[f])
            meta = batch.metas[i]
            name = PICKLES.get(meta.subset)
            if name is None or not meta.labels:
                skipped += 1
                continue
            lists[name][0].append(str(paths["imageaudio"]))
            lists[name][1].append(index[meta.labels[0]])
        bar.update(len(batch.ids))
    bar.close()
    (out / CLASS_ORDER_FILE).write_text("".join(c + "\n" for c in order))
    for name, (paths, labels) in lists.items():
        write_pickle(out / name, paths, labels)
    ckpt = None
    if head is not None:
        from ..models.release import save_release_head
        ckpt = save_release_head(head, out / "ImageAudioNet_l2l.pth", classes=classes,
                                 class_order=order, note={"l2l_student": str(student),
                                                          "l2l_student_hash": sinfo["hash"]})
    return {"videos": len(ids), "pickles": {n: len(p) for n, (p, _) in lists.items()},
            "skipped": skipped, "checkpoint": str(ckpt) if ckpt else None, "class_order": order}

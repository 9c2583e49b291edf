"""The index document of the packed layout: its empty shape, the checksum it records, and how a
commit folds staged parcels into it.  Pure functions on dicts; no I/O (``packed.py`` does that).

Shape: ``{"schema_version", "backend", "generation", "info": {...}, "consumed": [parcel names],
"videos": {id: {"meta": {...}, "fields": {name: {seg, arr, start, stop, key, upstream, rec,
shape, dtype, crc}}}}, "records": {rid: {stage, config, versions}}, "failures": {id: {...}}}``.

A put parcel's attributes: ``{"kind": "put", "seq", "digest", "videos": [{"meta", "replace",
"records": {field: {stage, config, key, upstream, versions, shape, dtype, checksum, arr, start,
stop}}}]}``; a failure parcel's: ``{"kind": "failure", "seq", "failure": {...}}``.
"""
from __future__ import annotations

import time
import zlib

import numpy as np

from .base import SCHEMA_VERSION, StoreError
from ..core.hashing import stable_hash


def checksum(a: np.ndarray) -> str:
    """CRC32 of the array's bytes, 8 hex digits."""
    return f"{zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) & 0xFFFFFFFF:08x}"


def empty_index(backend: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "backend": backend, "generation": 0,
            "videos": {}, "records": {}, "failures": {}, "info": {}, "consumed": []}


def pack(items) -> tuple[list[dict], dict[str, dict]]:
    """A parcel's contents from ``Put`` items: the per-video records (rows, checksums) and, per
    (field, dtype, row shape), one array: ``{"sig", "rows", "blocks"}`` (the videos' rows in order)."""
    plan: dict[str, dict] = {}              # arr name -> {"sig", "rows", "blocks"}
    videos = []
    for meta, arrays, records, replace in items:
        if set(arrays) != set(records):
            raise StoreError(f"{meta.id}: arrays {sorted(arrays)} and records {sorted(records)} differ")
        recs = {}
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            if a.shape[:1] != (meta.num_moments,):
                raise StoreError(f"{meta.id}: array {name!r} has shape {a.shape}; "
                                 f"expected {meta.num_moments} rows (one per moment)")
            sig = (name, str(a.dtype), tuple(a.shape[1:]))
            arr = next((k for k, v in plan.items() if v["sig"] == sig), None)
            if arr is None:
                arr = name if name not in plan else f"{name}.{len(plan)}"
                plan[arr] = {"sig": sig, "rows": 0, "blocks": []}
            p = plan[arr]
            rec = records[name].to_dict()
            rec.update(shape=list(a.shape), dtype=str(a.dtype), checksum=checksum(a),
                       arr=arr, start=p["rows"], stop=p["rows"] + len(a))
            p["blocks"].append(a)
            p["rows"] += len(a)
            recs[name] = rec
        videos.append({"meta": meta.to_dict(), "records": recs, "replace": bool(replace)})
    return videos, plan


def parcel_digest(videos: list[dict]) -> str:
    """A name for a parcel's contents (its videos, their keys and checksums): the segment a
    parcel becomes is named by it, so the same work gives the same segment files."""
    return stable_hash([[v["meta"]["id"], v["replace"],
                         sorted((f, r["key"], r["checksum"], r["arr"], r["start"], r["stop"])
                                for f, r in v["records"].items())] for v in videos])


def shallow_copy(idx: dict) -> dict:
    """A copy of the index whose tables may be changed by ``apply_commit`` without touching
    ``idx`` (a deep copy of a 20,000-video index would cost seconds per commit)."""
    new = dict(idx)
    for k in ("videos", "records", "failures", "info"):
        new[k] = dict(idx[k])
    return new


def plan_commit(parcels, gen: int, check, segment_of, taken: set[str]):
    """What a commit of ``parcels`` ([(name, attrs)], in commit order) does: ``(skip, bad,
    segs)``.  A (parcel, video id) is in ``skip`` when a later parcel replaces the video (a task
    retried after its worker died past ``put_many``), in ``bad`` when ``check(parcel, video)``
    fails; ``segs``: parcel -> the segment it becomes, for each parcel with a sound video
    (``segment_of(parcel)`` when it is one already, else ``<gen>-<place>-<digest>``, not in
    ``taken``: names sort as commits, then staging, ran)."""
    last_replace = {}
    for k, (_, a) in enumerate(parcels):
        for v in a.get("videos", []):
            if v["replace"]:
                last_replace[v["meta"]["id"]] = k
    skip, bad, segs = set(), set(), {}
    for k, (pname, a) in enumerate(parcels):
        live = False
        for v in a.get("videos", []):
            vid = v["meta"]["id"]
            if k < last_replace.get(vid, -1):
                skip.add((pname, vid))
            elif not check(pname, v):
                bad.add((pname, vid))
            else:
                live = True
        if live:
            seg = segment_of(pname)
            if seg is None:
                seg = f"{gen:06d}-{k:04d}-{a['digest'][:12]}"
                while seg in taken:
                    seg += "x"
            segs[pname] = seg
            taken.add(seg)
    return skip, bad, segs


def apply_commit(idx: dict, parcels, segs: dict[str, str], skip: set, bad: set) -> None:
    """Fold ``parcels`` ([(name, attrs)], in commit order) into ``idx``: failures are recorded;
    each video of a put parcel points its fields at rows ``rec["arr"], rec["start"]:rec["stop"]``
    of segment ``segs[name]``.  A (parcel, video id) in ``skip`` (superseded by a later put) is
    left out; one in ``bad`` (failed its checksum) becomes a failure instead.  Only the top-level
    tables and the entries it changes are replaced, never mutated (``shallow_copy`` shares the
    rest with the index readers hold)."""
    for pname, a in parcels:
        if a.get("kind") == "failure":
            f = a["failure"]
            idx["failures"][f["id"]] = f
            continue
        for v in a["videos"]:
            meta = v["meta"]
            vid = meta["id"]
            if (pname, vid) in skip:
                continue
            if (pname, vid) in bad:
                idx["failures"][vid] = {"id": vid, "stage": "store", "source": meta.get("source", ""),
                                        "subset": meta.get("subset", ""),
                                        "labels": list(meta.get("labels", ())),
                                        "reason": "staged arrays failed their checksum; re-extract",
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                continue
            entry = idx["videos"].get(vid)        # a new entry (the old one may be shared)
            fields = {} if entry is None or v["replace"] else dict(entry["fields"])
            entry = idx["videos"][vid] = {"meta": meta, "fields": fields}
            for field, rec in v["records"].items():
                shared = {"stage": rec["stage"], "config": rec["config"], "versions": rec["versions"]}
                rid = stable_hash(shared)
                idx["records"].setdefault(rid, shared)
                entry["fields"][field] = {"seg": segs[pname], "arr": rec["arr"],
                                          "start": rec["start"], "stop": rec["stop"],
                                          "key": rec["key"], "upstream": rec["upstream"],
                                          "rec": rid, "shape": rec["shape"], "dtype": rec["dtype"],
                                          "crc": rec["checksum"]}
            idx["failures"].pop(vid, None)


class DictIndex:
    """Queries on an index held as one dict (the HDF5 backend's, and a Zarr store's from
    before the SQLite index): the same questions ``sqlindex.SqlIndex`` answers."""

    def __init__(self, idx: dict):
        self.d = idx

    def check(self) -> None:
        if self.d.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"schema version {self.d.get('schema_version')} is not "
                             f"{SCHEMA_VERSION}, which this l2l reads")

    @property
    def generation(self) -> int:
        return self.d["generation"]

    @property
    def consumed(self) -> list[str]:
        return list(self.d.get("consumed", []))

    def ids(self, subset: str | None = None) -> list[str]:
        return sorted(v for v, e in self.d["videos"].items()
                      if subset is None or e["meta"]["subset"] == subset)

    def has(self, vid: str) -> bool:
        return vid in self.d["videos"]

    def entries(self, ids) -> dict[str, dict]:
        videos = self.d["videos"]
        return {v: videos[v] for v in ids if v in videos}

    def entry(self, vid: str) -> dict | None:
        return self.d["videos"].get(vid)

    def all_entries(self):
        for vid in sorted(self.d["videos"]):
            yield vid, self.d["videos"][vid]

    def moments(self, ids) -> dict[str, int]:
        videos = self.d["videos"]
        return {v: videos[v]["meta"]["num_moments"] for v in ids if v in videos}

    def record(self, rid: str) -> dict:
        return self.d["records"][rid]

    def failure(self, vid: str) -> dict | None:
        return self.d["failures"].get(vid)

    def failures(self) -> list[dict]:
        return sorted(self.d["failures"].values(), key=lambda f: f["id"])

    def failed_ids(self, ids) -> set[str]:
        return {v for v in ids if v in self.d["failures"]}

    def info(self) -> dict:
        return dict(self.d["info"])

    def used_segments(self) -> set[str]:
        return {f["seg"] for e in self.d["videos"].values() for f in e["fields"].values()}

    def segment_used(self, seg: str) -> bool:
        return seg in self.used_segments()

    def summary(self) -> dict:
        subsets: dict[str, dict] = {}
        arrays: dict[str, dict] = {}
        for e in self.d["videos"].values():
            m = e["meta"]
            s = subsets.setdefault(m["subset"], {"videos": 0, "moments": 0, "no_audio": 0})
            s["videos"] += 1
            s["moments"] += m["num_moments"]
            s["no_audio"] += not m["has_audio"]
            for name, f in e["fields"].items():
                a = arrays.setdefault(name, {"videos": 0, "parts": {}})
                a["videos"] += 1
                key = (f["rec"], f["dtype"], tuple(f["shape"][1:]))
                a["parts"][key] = a["parts"].get(key, 0) + 1
        for a in arrays.values():
            a["parts"] = [{"record": self.record(r), "dtype": dt, "shape": list(sh), "videos": n}
                          for (r, dt, sh), n in a["parts"].items()]
        return {"subsets": subsets, "arrays": arrays, "failures": len(self.d["failures"])}

    def to_dict(self) -> dict:
        return self.d

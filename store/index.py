"""The index document of the packed layout: its empty shape, the checksum it records, and how a
commit folds staged parcels into it.  Pure functions on dicts; no I/O (``packed.py`` does that).

Shape: ``{"schema_version", "backend", "generation", "info": {...}, "consumed": [parcel names],
"videos": {id: {"meta": {...}, "fields": {name: {seg, arr, start, stop, key, upstream, rec,
shape, dtype, crc}}}}, "records": {rid: {stage, config, versions}}, "failures": {id: {...}}}``.
"""
from __future__ import annotations

import time
import zlib

import numpy as np

from .base import SCHEMA_VERSION
from ..core.hashing import stable_hash


def checksum(a: np.ndarray) -> str:
    """CRC32 of the array's bytes, 8 hex digits."""
    return f"{zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) & 0xFFFFFFFF:08x}"


def empty_index(backend: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "backend": backend, "generation": 0,
            "videos": {}, "records": {}, "failures": {}, "info": {}, "consumed": []}


def apply_commit(idx: dict, parcels, placed: dict, seg: str, bad: set[str]) -> None:
    """Fold ``parcels`` ([(name, attrs)], in commit order) into ``idx``: failures are recorded,
    puts point their fields at rows ``placed[(name, field)] = (arr, start, stop)`` of segment
    ``seg``, and a parcel in ``bad`` (failed its checksum) becomes a failure instead."""
    for pname, a in parcels:
        if a.get("kind") == "failure":
            f = a["failure"]
            idx["failures"][f["id"]] = f
            continue
        meta = a["meta"]
        vid = meta["id"]
        if pname in bad:
            idx["failures"][vid] = {"id": vid, "stage": "store", "source": meta.get("source", ""),
                                    "reason": "staged arrays failed their checksum; re-extract",
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            continue
        entry = idx["videos"].get(vid)
        if entry is None or a["replace"]:
            entry = idx["videos"][vid] = {"meta": meta, "fields": {}}
        entry["meta"] = meta
        for field, rec in a["records"].items():
            shared = {"stage": rec["stage"], "config": rec["config"], "versions": rec["versions"]}
            rid = stable_hash(shared)
            idx["records"].setdefault(rid, shared)
            arr, start, stop = placed[(pname, field)]
            entry["fields"][field] = {"seg": seg, "arr": arr, "start": start, "stop": stop,
                                      "key": rec["key"], "upstream": rec["upstream"],
                                      "rec": rid, "shape": rec["shape"], "dtype": rec["dtype"],
                                      "crc": rec["checksum"]}
        idx["failures"].pop(vid, None)

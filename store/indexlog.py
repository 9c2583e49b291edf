"""The Zarr store's index log: every change of the index, one small JSON file each, written
(fsynced) before the SQLite transaction that makes it, so that a damaged index database (a
truncated or overwritten ``index.sqlite``) can be rebuilt: ``replay`` folds the log again, up to
the last entry that reads whole (a torn last entry means the generation before it).

``STORE/index/log/<seq>.json``, ``seq`` counting every change of the index (``SqlIndex.seq``):
``{"op": "commit", "gen", "parcels": [[name, attrs]], "segs": {parcel: segment}, "skip": [[parcel,
id]], "bad": [[parcel, id]]}`` (what ``index.apply_commit`` takes), ``{"op": "info", "values"}``,
``{"op": "remove", "ids"}``, or ``{"op": "snapshot", "index": {...}}`` (the whole index as a dict,
written when a store is migrated from the JSON index).  An entry whose transaction never
happened (a crash between the two) is rewritten by the next change with the same ``seq``.

Not here: the database (``sqlindex.py``), the commit protocol (``packed.py``).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from .index import apply_commit, empty_index


def entry_path(folder: Path, seq: int) -> Path:
    return Path(folder) / f"{seq:010d}.json"


def write(folder: Path, seq: int, entry: dict) -> None:
    """Write entry ``seq`` whole (temporary name, fsync, rename)."""
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    dst = entry_path(folder, seq)
    tmp = folder / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(entry, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit_entry(parcels, segs: dict, skip: set, bad: set, gen: int) -> dict:
    return {"op": "commit", "gen": gen, "parcels": [[n, a] for n, a in parcels], "segs": segs,
            "skip": sorted(map(list, skip)), "bad": sorted(map(list, bad))}


def replay(folder: Path, backend: str) -> tuple[dict, int, list[str]]:
    """The index the log describes: ``(index dict, last seq folded, names of the entries left
    out)`` (an unreadable entry and every one after it: their order cannot be trusted)."""
    idx, last, dropped = empty_index(backend), 0, []
    files = sorted(p for p in Path(folder).glob("*.json") if not p.name.startswith("."))
    for k, p in enumerate(files):
        try:
            e = json.loads(p.read_text())
            seq = int(p.stem)
            op = e["op"]
        except (OSError, ValueError, KeyError, TypeError):
            dropped = [q.name for q in files[k:]]
            break
        if op == "snapshot":
            idx = e["index"]
        elif op == "commit":
            idx["generation"] = e["gen"]
            idx["consumed"] = [n for n, _ in e["parcels"]]
            apply_commit(idx, [tuple(p) for p in e["parcels"]], e["segs"],
                         {tuple(x) for x in e["skip"]}, {tuple(x) for x in e["bad"]})
        elif op == "info":
            idx["info"].update(e["values"])
        elif op == "remove":
            for v in e["ids"]:
                idx["videos"].pop(v, None)
        last = seq
    return idx, last, dropped

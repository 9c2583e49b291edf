"""Row writers of the SQLite index (``sqlindex.py``): a video, a provenance record, a failure,
the ``counts`` kept by every change, and a whole dict-shaped index (``index.py``) written in bulk
(a migration, a rebuild from the log).  Each takes an open connection inside a transaction.
"""
from __future__ import annotations

import json

from .base import SCHEMA_VERSION

INSERT_FIELD = ("INSERT OR REPLACE INTO fields(video, name, seg, arr, start, stop, key, upstream, rec, "
                "shape, dtype, crc, row_shape) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")


def _dumps(x) -> str:
    return json.dumps(x, separators=(",", ":"))


def set_value(db, key: str, value) -> None:
    db.execute("INSERT OR REPLACE INTO store VALUES (?,?)", (key, _dumps(value)))


def _put_video(db, meta: dict) -> None:
    n, audio = int(meta.get("num_moments", 0)), int(bool(meta.get("has_audio", True)))
    db.execute("INSERT OR REPLACE INTO videos VALUES (?,?,?,?,?)",
               (meta["id"], meta.get("subset", ""), n, audio, _dumps(meta)))
    _count(db, "subset", meta.get("subset", ""), 1, n, 1 - audio)


def _count(db, kind: str, key: str, videos: int, moments: int, no_audio: int) -> None:
    db.execute("INSERT INTO counts VALUES (?,?,?,?,?) ON CONFLICT(kind, key) DO UPDATE SET "
               "videos = videos + excluded.videos, moments = moments + excluded.moments, "
               "no_audio = no_audio + excluded.no_audio", (kind, key, videos, moments, no_audio))


def _uncount_video(db, vid: str) -> None:
    """Take a video's row (if any) out of the counts (before it is replaced or removed)."""
    for subset, n, audio in db.execute("SELECT subset, num_moments, has_audio FROM videos "
                                       "WHERE id=?", (vid,)).fetchall():
        _count(db, "subset", subset, -1, -n, -(1 - audio))


def _uncount_fields(db, vid: str, name: str | None = None) -> None:
    """Take a video's field rows (all, or ``name``'s) out of the counts."""
    rows = db.execute("SELECT name, rec, dtype, row_shape FROM fields WHERE video=?"
                      + (" AND name=?" if name else ""), (vid, name) if name else (vid,)).fetchall()
    for field, rec, dtype, row in rows:
        _count(db, "field", _dumps([field, rec, dtype, json.loads(row)]), -1, 0, 0)


def _put_record(db, rid: str, shared: dict) -> None:
    db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?,?)",
               (rid, shared["stage"], _dumps(shared["config"]), _dumps(shared["versions"])))


def _put_failure(db, f: dict) -> None:
    db.execute("INSERT OR REPLACE INTO failures VALUES (?,?,?)", (f["id"], f.get("stage", ""), _dumps(f)))


def _fill(db, idx: dict, backend: str) -> None:
    """Write a dict-shaped index (``index.py``) into an empty database (bulk inserts; the counts
    summed here)."""
    for key in ("schema_version", "generation", "consumed"):
        set_value(db, key, idx.get(key, SCHEMA_VERSION if key == "schema_version" else
                              0 if key == "generation" else []))
    set_value(db, "backend", backend)
    db.executemany("INSERT INTO info VALUES (?,?)", [(k, _dumps(v)) for k, v in idx["info"].items()])
    for rid, r in idx["records"].items():
        _put_record(db, rid, r)
    for f in idx["failures"].values():
        _put_failure(db, f)
    counts: dict[tuple[str, str], list[int]] = {}
    videos, fields = [], []
    for vid, e in idx["videos"].items():
        m = e["meta"]
        n, audio = int(m.get("num_moments", 0)), int(bool(m.get("has_audio", True)))
        videos.append((vid, m.get("subset", ""), n, audio, _dumps(m)))
        c = counts.setdefault(("subset", m.get("subset", "")), [0, 0, 0])
        c[0], c[1], c[2] = c[0] + 1, c[1] + n, c[2] + 1 - audio
        for name, f in e["fields"].items():
            row = list(f["shape"][1:])
            fields.append((vid, name, f["seg"], f["arr"], f["start"], f["stop"], f["key"],
                           _dumps(f["upstream"]), f["rec"], _dumps(list(f["shape"])), f["dtype"],
                           f["crc"], _dumps(row)))
            counts.setdefault(("field", _dumps([name, f["rec"], f["dtype"], row])), [0, 0, 0])[0] += 1
    db.executemany("INSERT INTO videos VALUES (?,?,?,?,?)", videos)
    db.executemany(INSERT_FIELD, fields)
    db.executemany("INSERT INTO counts VALUES (?,?,?,?,?)", [(*k, *v) for k, v in counts.items()])

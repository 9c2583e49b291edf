"""The Zarr store's index as an SQLite database (``STORE/index/index.sqlite``): one row per
video, one per (video, field), per failure, per shared provenance record.

Why SQLite (the standard library's ``sqlite3``) and not one JSON document: a commit changes only
the rows of the videos it folds (one transaction: atomic, fsynced, rolled back by the next
opener after a crash), so its cost grows with the videos committed, not with the store; opening
reads nothing until asked, and a question about a few videos (a dask shard's) reads only their
rows through the primary keys, so no process holds the whole index; counts for ``store info``
are ``GROUP BY`` queries.  Any ``sqlite3`` finds a video's rows without l2l::

    SELECT seg, arr, start, stop FROM fields WHERE video = 'VIDEO_ID' AND name = 'image'

(the rows ``start:stop`` of the Zarr array ``segments/<seg>/<arr>``).  An append-only table of
Zarr arrays would need its own lookup structure and compaction to answer the same questions.

Tables (text columns holding JSON say so)::

    store(key, value)          schema_version, backend, generation, consumed (JSON list), seq
    info(key, value JSON)      store-level attributes (classes, fields, costs, ...)
    videos(id, subset, num_moments, has_audio, meta JSON)
    fields(video, name, seg, arr, start, stop, key, upstream JSON, rec, shape JSON, dtype, crc,
           row_shape JSON)                           (shape without its first axis)
    records(id, stage, config JSON, versions JSON)   provenance shared by many videos' fields
    failures(id, stage, doc JSON)                    the ``Failure`` as a dict
    counts(kind, key, videos, moments, no_audio)     kept by every change: per subset ("subset",
                                                     subset) and per kind of array ("field",
                                                     JSON [name, rec, dtype, row shape])

Not here: the commit protocol (``packed.py``) or which parcels a commit folds (``index.py``).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from .base import SCHEMA_VERSION, StoreError, StoreWriteError
from ..core.hashing import stable_hash
from .sqlrows import (INSERT_FIELD, _count, _dumps, _fill, _put_failure, _put_record, _put_video,
                      _uncount_fields, _uncount_video, set_value)

SCHEMA = """
CREATE TABLE store(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE info(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE videos(id TEXT PRIMARY KEY, subset TEXT NOT NULL, num_moments INTEGER NOT NULL,
                    has_audio INTEGER NOT NULL, meta TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX videos_counts ON videos(subset, num_moments, has_audio);
CREATE TABLE fields(video TEXT NOT NULL, name TEXT NOT NULL, seg TEXT NOT NULL, arr TEXT NOT NULL,
                    start INTEGER NOT NULL, stop INTEGER NOT NULL, key TEXT NOT NULL,
                    upstream TEXT NOT NULL, rec TEXT NOT NULL, shape TEXT NOT NULL,
                    dtype TEXT NOT NULL, crc TEXT NOT NULL, row_shape TEXT NOT NULL,
                    PRIMARY KEY (video, name)) WITHOUT ROWID;
CREATE INDEX fields_seg ON fields(seg);
CREATE INDEX fields_kinds ON fields(name, rec, dtype, row_shape);
CREATE TABLE records(id TEXT PRIMARY KEY, stage TEXT NOT NULL, config TEXT NOT NULL,
                     versions TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE failures(id TEXT PRIMARY KEY, stage TEXT NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE counts(kind TEXT NOT NULL, key TEXT NOT NULL, videos INTEGER NOT NULL,
                    moments INTEGER NOT NULL, no_audio INTEGER NOT NULL,
                    PRIMARY KEY (kind, key)) WITHOUT ROWID;
"""
FIELD_COLS = "video, name, seg, arr, start, stop, key, upstream, rec, shape, dtype, crc"
BUSY_MS = 120_000            # how long a reader waits for a commit's exclusive moment
IN_CHUNK = 500               # ids per ``IN (...)`` query


# SQLite keeps each database file's lock state per process (its unix VFS), and a forked child
# inherits that bookkeeping: a child forked (a dask worker: ``runner.local_cluster`` forks while
# the parent sets the store up) while a thread here is inside a transaction believes a lock is
# held that nobody holds in it, and its every read waits BUSY_MS for it ("database is locked");
# a child forked under a read may read without a real lock.  So every use of a connection holds
# _FORK, and a fork (``os.fork``: multiprocessing's "fork", not subprocess) waits for it.
_FORK = threading.RLock()


def _fork_child() -> None:
    global _FORK
    _FORK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _FORK.acquire(), after_in_parent=lambda: _FORK.release(),
                        after_in_child=_fork_child)


def _field(row) -> tuple[str, dict]:
    (_, name, seg, arr, start, stop, key, upstream, rec, shape, dtype, crc) = row
    return name, {"seg": seg, "arr": arr, "start": start, "stop": stop, "key": key,
                  "upstream": json.loads(upstream), "rec": rec, "shape": json.loads(shape),
                  "dtype": dtype, "crc": crc}


class SqlIndex:
    """One store's index database.  Thread-safe (one connection, used under a lock); a forked
    process opens its own connection.  Every answer is the index as last committed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._owner = os.getpid()                # the process whose lock and connection these are
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._records: dict[str, dict] = {}      # rid -> record (immutable once written)

    # ---- connection ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self):
        """Held around every use of the connection: this index's lock, then the process's
        ``_FORK`` (no fork while a statement or transaction is open).  A forked child (a dask
        worker) gets a fresh lock (the parent's may have been held by another thread at the
        fork) and opens its own connection."""
        if self._owner != os.getpid():
            self._lock, self._conn, self._owner = threading.RLock(), None, os.getpid()
        with self._lock, _FORK:
            yield

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if not self.path.is_file():
                raise StoreError(f"{self.path}: the store's index is missing")
            writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
            uri = f"file:{self.path}?mode={'rw' if writable else 'ro'}"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=BUSY_MS / 1000)
                conn.execute("PRAGMA synchronous=FULL")
                if writable:                     # a journal truncated, not deleted, after each
                    conn.execute("PRAGMA journal_mode=TRUNCATE")    # commit: no directory change
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot open the index ({e}); "
                                 "`l2l store repair` rebuilds it") from None
            self._conn, self._pid, self._records = conn, os.getpid(), {}
        return self._conn

    def close(self) -> None:
        with self._guard():
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _q(self, sql: str, args=()) -> list:
        with self._guard():
            try:
                return self._db().execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: cannot read the index ({e}); "
                                 "`l2l store repair` restores it") from None

    @classmethod
    def create(cls, path: Path, backend: str, index: dict | None = None, seq: int = 0) -> "SqlIndex":
        """A new database at ``path`` (written under a temporary name, fsynced, then renamed
        into place), empty or holding the dict-shaped ``index`` (``index.py``'s shape)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{time.time_ns()}.tmp")
        try:
            with _FORK:                          # (the file renamed into place: same inode)
                cls._create(tmp, backend, index, seq)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return cls(path)

    @staticmethod
    def _create(tmp: Path, backend: str, index: dict | None, seq: int) -> None:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(SCHEMA)
            conn.execute("BEGIN")
            idx = index or {"schema_version": SCHEMA_VERSION, "backend": backend,
                            "generation": 0, "videos": {}, "records": {}, "failures": {},
                            "info": {}, "consumed": []}
            _fill(conn, idx, backend)
            set_value(conn, "seq", seq)
            conn.execute("COMMIT")
        finally:
            conn.close()

    # ---- reading -------------------------------------------------------------------------
    def _value(self, key: str):
        got = self._q("SELECT value FROM store WHERE key=?", (key,))
        return json.loads(got[0][0]) if got else None

    def check(self, thorough: bool = False) -> None:
        """Raise ``StoreError`` unless the database opens and is of this schema version
        (``thorough``: and SQLite's ``quick_check`` of every page finds nothing wrong)."""
        if thorough:
            got = self._q("PRAGMA quick_check")
            if [r[0] for r in got] != ["ok"]:
                raise StoreError(f"{self.path}: the index is damaged ({got[0][0]})")
        version = self._value("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is not {SCHEMA_VERSION}, "
                             "which this l2l reads")

    @property
    def generation(self) -> int:
        return int(self._value("generation") or 0)

    @property
    def seq(self) -> int:
        """How many changes the index has had (``indexlog.py`` numbers its entries so)."""
        return int(self._value("seq") or 0)

    @property
    def consumed(self) -> list[str]:
        return list(self._value("consumed") or [])

    def ids(self, subset: str | None = None) -> list[str]:
        if subset is None:
            return [r[0] for r in self._q("SELECT id FROM videos ORDER BY id")]
        return [r[0] for r in self._q("SELECT id FROM videos WHERE subset=? ORDER BY id", (subset,))]

    def has(self, vid: str) -> bool:
        return bool(self._q("SELECT 1 FROM videos WHERE id=?", (vid,)))

    def entries(self, ids: Iterable[str]) -> dict[str, dict]:
        """id -> ``{"meta": {...}, "fields": {name: {...}}}`` for those of ``ids`` present,
        read in one transaction."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, dict] = {}
        with self._guard():
            db = self._db()
            db.execute("BEGIN")
            try:
                for k in range(0, len(ids), IN_CHUNK):
                    part = ids[k:k + IN_CHUNK]
                    marks = ",".join("?" * len(part))
                    for vid, meta in db.execute(f"SELECT id, meta FROM videos WHERE id IN ({marks})", part):
                        out[vid] = {"meta": json.loads(meta), "fields": {}}
                    for row in db.execute(f"SELECT {FIELD_COLS} FROM fields WHERE video IN ({marks})", part):
                        if row[0] in out:
                            name, f = _field(row)
                            out[row[0]]["fields"][name] = f
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: cannot read the index ({e}); "
                                 "`l2l store repair` restores it") from None
            finally:
                db.execute("COMMIT")
        return out

    def entry(self, vid: str) -> dict | None:
        return self.entries([vid]).get(vid)

    def all_entries(self, batch: int = 20000) -> Iterator[tuple[str, dict]]:
        """Every video's entry, in id order, ``batch`` videos at a time."""
        last = ""
        while True:
            ids = [r[0] for r in self._q("SELECT id FROM videos WHERE id>? ORDER BY id LIMIT ?",
                                          (last, batch))]
            if not ids:
                return
            got = self.entries(ids)
            for vid in ids:
                if vid in got:
                    yield vid, got[vid]
            last = ids[-1]

    def moments(self, ids: Iterable[str]) -> dict[str, int]:
        ids = list(ids)
        out = {}
        for k in range(0, len(ids), IN_CHUNK):
            part = ids[k:k + IN_CHUNK]
            out.update(self._q(f"SELECT id, num_moments FROM videos WHERE id IN "
                               f"({','.join('?' * len(part))})", part))
        return out

    def record(self, rid: str) -> dict:
        got = self._records.get(rid)
        if got is None:
            rows = self._q("SELECT stage, config, versions FROM records WHERE id=?", (rid,))
            if not rows:
                raise StoreError(f"{self.path}: the index lacks provenance record {rid}")
            got = self._records[rid] = {"stage": rows[0][0], "config": json.loads(rows[0][1]),
                                        "versions": json.loads(rows[0][2])}
        return got

    def failure(self, vid: str) -> dict | None:
        rows = self._q("SELECT doc FROM failures WHERE id=?", (vid,))
        return json.loads(rows[0][0]) if rows else None

    def failures(self) -> list[dict]:
        return [json.loads(r[0]) for r in self._q("SELECT doc FROM failures ORDER BY id")]

    def failed_ids(self, ids: Iterable[str]) -> set[str]:
        ids, out = list(ids), set()
        for k in range(0, len(ids), IN_CHUNK):
            part = ids[k:k + IN_CHUNK]
            out.update(r[0] for r in self._q(f"SELECT id FROM failures WHERE id IN "
                                             f"({','.join('?' * len(part))})", part))
        return out

    def info(self) -> dict:
        return {k: json.loads(v) for k, v in self._q("SELECT key, value FROM info")}

    def segment_used(self, seg: str) -> bool:
        return bool(self._q("SELECT 1 FROM fields WHERE seg=? LIMIT 1", (seg,)))

    def used_segments(self) -> set[str]:
        return {r[0] for r in self._q("SELECT DISTINCT seg FROM fields")}

    def summary(self) -> dict:
        """Counts for ``store info``: per subset (videos, moments, without audio), per field
        (videos, and per record / dtype / row shape), failures; from the ``counts`` table (kept
        by every change: no scan of the videos)."""
        subsets, arrays = {}, {}
        for kind, key, n, m, q in self._q("SELECT kind, key, videos, moments, no_audio FROM counts "
                                          "WHERE videos > 0 ORDER BY kind, key"):
            if kind == "subset":
                subsets[key] = {"videos": n, "moments": m, "no_audio": q}
                continue
            name, rec, dtype, row = json.loads(key)
            a = arrays.setdefault(name, {"videos": 0, "parts": []})
            a["videos"] += n
            a["parts"].append({"record": self.record(rec), "dtype": dtype, "shape": row, "videos": n})
        nfail = self._q("SELECT COUNT(*) FROM failures")[0][0]
        return {"subsets": subsets, "arrays": arrays, "failures": nfail}

    def to_dict(self) -> dict:
        """The whole index in ``index.py``'s dict shape (reads everything: for export, tests
        and tools, never for the pipeline)."""
        return {"schema_version": self._value("schema_version"), "backend": self._value("backend"),
                "generation": self.generation, "info": self.info(), "consumed": self.consumed,
                "videos": dict(self.all_entries()),
                "records": {r: {"stage": s, "config": json.loads(c), "versions": json.loads(v)}
                            for r, s, c, v in self._q("SELECT id, stage, config, versions FROM records")},
                "failures": {f["id"]: f for f in self.failures()}}

    # ---- writing (under the store's commit lock) ----------------------------------------
    def _write(self, fn) -> object:
        with self._guard():
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return out
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreWriteError(f"{self.path}: cannot write the index ({e})") from None

    def apply_commit(self, parcels, segs: dict[str, str], skip: set, bad: set, gen: int,
                     seq: int) -> set[str]:
        """Fold ``parcels`` into the index in one transaction (what ``index.apply_commit`` does
        to a dict); returns the segments that lost a reference (to check for garbage)."""
        def run(db) -> set[str]:
            freed: set[str] = set()
            known: set[str] = set()                # records written by this commit
            for pname, a in parcels:
                if a.get("kind") == "failure":
                    _put_failure(db, a["failure"])
                    continue
                for v in a["videos"]:
                    meta, vid = v["meta"], v["meta"]["id"]
                    if (pname, vid) in skip:
                        continue
                    if (pname, vid) in bad:
                        _put_failure(db, {"id": vid, "stage": "store", "source": meta.get("source", ""),
                                          "subset": meta.get("subset", ""),
                                          "labels": list(meta.get("labels", ())),
                                          "reason": "staged arrays failed their checksum; re-extract",
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                        continue
                    _uncount_video(db, vid)
                    if v["replace"]:
                        freed.update(r[0] for r in db.execute("SELECT seg FROM fields WHERE video=?", (vid,)))
                        _uncount_fields(db, vid)
                        db.execute("DELETE FROM fields WHERE video=?", (vid,))
                    _put_video(db, meta)
                    for field, rec in v["records"].items():
                        shared = {"stage": rec["stage"], "config": rec["config"], "versions": rec["versions"]}
                        rid = stable_hash(shared)
                        if rid not in known:
                            _put_record(db, rid, shared)
                            known.add(rid)
                        if not v["replace"]:
                            freed.update(r[0] for r in db.execute(
                                "SELECT seg FROM fields WHERE video=? AND name=?", (vid, field)))
                            _uncount_fields(db, vid, field)
                        db.execute(INSERT_FIELD, (vid, field, segs[pname], rec["arr"], rec["start"],
                                                  rec["stop"], rec["key"], _dumps(rec["upstream"]), rid,
                                                  _dumps(list(rec["shape"])), rec["dtype"],
                                                  rec["checksum"], _dumps(list(rec["shape"][1:]))))
                        _count(db, "field", _dumps([field, rid, rec["dtype"], list(rec["shape"][1:])]),
                               1, 0, 0)
                    db.execute("DELETE FROM failures WHERE id=?", (vid,))
            set_value(db, "generation", gen)
            set_value(db, "consumed", [n for n, _ in parcels])
            set_value(db, "seq", seq)
            return freed - set(segs.values())
        return self._write(run)

    def update_info(self, values: dict, seq: int) -> None:
        def run(db) -> None:
            db.executemany("INSERT OR REPLACE INTO info VALUES (?,?)",
                           [(k, _dumps(v)) for k, v in values.items()])
            set_value(db, "seq", seq)
        self._write(run)

    def remove(self, vids: Iterable[str], seq: int) -> set[str]:
        """Drop videos; returns the segments they used."""
        vids = list(vids)

        def run(db) -> set[str]:
            set_value(db, "seq", seq)
            freed = set()
            for vid in vids:
                freed.update(r[0] for r in db.execute("SELECT seg FROM fields WHERE video=?", (vid,)))
                _uncount_video(db, vid)
                _uncount_fields(db, vid)
                db.execute("DELETE FROM fields WHERE video=?", (vid,))
                db.execute("DELETE FROM videos WHERE id=?", (vid,))
            return freed
        return self._write(run)

"""The Zarr store's index: which index a store has (the SQLite one, ``sqlindex.py``, or the JSON
attribute of a store from before it), its migration, its log (``indexlog.py``) and the rebuild
of a damaged one from that log; a mixin of ``zarr_store.ZarrStore``, which owns the layout (see
its docstring) and the commit's renames.

Not here: parcels, segments, chunk files (``zarr_store.py``, ``zarr_chunks.py``).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from . import indexlog
from .base import StoreError, StoreWriteError
from .index import DictIndex
from .sqlindex import SqlIndex

RECORD = "l2l_parcel.json"   # a parcel's record, inside its folder (and its segment's, until folded)
DB = "index.sqlite"
INSTALLING = "installing.json"
LOG = "log"                  # index/log/<seq>.json: every change of the index (``indexlog.py``)
INDEX_ATTRS = {"l2l_index_file": DB, "l2l_index_format": "sqlite3 (see l2l/store/sqlindex.py)"}


def _atomic_write_json(path: Path, doc: dict, sync: bool = True) -> str:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    text = json.dumps(doc, separators=(",", ":"))  # (json.dump would encode in pure Python:
    try:                                           # 10x slower on a large document)
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return text


def _group_doc(attrs: dict) -> dict:
    return {"zarr_format": 3, "node_type": "group", "attributes": attrs}


class ZarrIndex:
    """The index half of ``ZarrStore`` (uses its ``path``, ``lock``, ``_gc`` and ``_sql`` /
    ``_legacy``, set in its ``__init__``)."""

    # ---- index ---------------------------------------------------------------------------
    def _ix(self):
        if self._sql is not None:
            return self._sql
        db = self.path / "index" / DB
        if db.is_file():
            ix = SqlIndex(db)
            ix.check()
            self._sql, self._legacy = ix, None
            return ix
        return self._legacy_index()

    def _legacy_index(self) -> DictIndex:
        """The index of a store from before the SQLite index: the JSON attribute."""
        doc = self.path / "index" / "zarr.json"
        try:
            st = os.stat(doc)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._legacy is None or self._legacy[0] != stamp:
                index = json.loads(doc.read_bytes())["attributes"]["l2l_index"]
                ix = DictIndex(index)
                ix.check()
                self._legacy = (stamp, ix)
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{self.path}: cannot read the index ({e})") from None
        except StoreError as e:
            raise StoreError(f"{self.path}: {e}") from None
        return self._legacy[1]

    def migrate(self) -> bool:
        """A JSON index (``l2l_index`` attribute) becomes the SQLite index; True if it was one."""
        with self.lock():
            return self._migrate_locked()

    def _migrate_locked(self) -> bool:
        db = self.path / "index" / DB
        if db.is_file():
            return False
        index = self._legacy_index().d
        try:                                     # segments an old cut-short commit left
            pending = [p.name for p in (self.path / "segments").iterdir() if (p / RECORD).exists()]
            _atomic_write_json(self.path / "index" / INSTALLING, {"segments": pending})
            indexlog.write(self.path / "index" / LOG, 1, {"op": "snapshot", "index": index})
            self._sql = SqlIndex.create(db, "zarr", index, seq=1)
            _atomic_write_json(self.path / "index" / "zarr.json", _group_doc(INDEX_ATTRS))
        except OSError as e:
            raise StoreWriteError(f"{self.path}: cannot migrate the index ({e.strerror or e})") from None
        self._legacy = None
        return True

    def _sql_index(self) -> SqlIndex:
        """The SQLite index, migrating a JSON one first (under the commit lock)."""
        self._migrate_locked()
        return self._ix()

    def _logged(self, entry: dict) -> int:
        """Write ``entry`` as the index's next change; returns its number."""
        ix = self._sql_index()
        seq = ix.seq + 1
        try:
            indexlog.write(self.path / "index" / LOG, seq, entry)
        except OSError as e:
            raise StoreWriteError(f"{self.path}: cannot write the index ({e.strerror or e})") from None
        return seq

    def repair_index(self) -> str | None:
        """When the index database cannot be read (truncated, overwritten, not a database):
        rebuild it from its log (``indexlog.py``), up to the last change that reads whole.
        Returns what was done (None: the index is sound)."""
        with self.lock():
            db = self.path / "index" / DB
            if not db.is_file() and not (self.path / "index" / LOG).is_dir():
                return None                       # a store from before the SQLite index
            try:
                SqlIndex(db).check(thorough=True)
                return None
            except StoreError as e:
                broken = str(e)
            index, seq, dropped = indexlog.replay(self.path / "index" / LOG, "zarr")
            if self._sql is not None:
                self._sql.close()
            self._sql = None
            try:
                SqlIndex.create(db, "zarr", index, seq=seq)
            except OSError as e:
                raise StoreWriteError(f"{self.path}: cannot rebuild the index ({e.strerror or e})") from None
            self._gc()                            # segments of changes left out: garbage now
            why = broken.split("(", 1)[-1].split(");")[0].rstrip(")") if "(" in broken else broken
            return (f"the index could not be read ({why}); rebuilt from its "
                    f"log: generation {index['generation']}, {len(index['videos'])} videos"
                    + (f" (left out {len(dropped)} damaged change(s): {', '.join(dropped)})"
                       if dropped else ""))

    def _installing(self) -> list[str]:
        try:
            return json.loads((self.path / "index" / INSTALLING).read_text())["segments"]
        except (OSError, ValueError, KeyError):
            return []

    def _tidy_installed(self, ix) -> None:
        """Remove parcel records left in segments the index uses (a commit cut short after its
        index was saved)."""
        for seg in self._installing():
            rec = self.path / "segments" / seg / RECORD
            if rec.exists() and ix.segment_used(seg):
                rec.unlink(missing_ok=True)

    def _update_info(self, values: dict) -> None:
        seq = self._logged({"op": "info", "values": values})
        self._sql.update_info(values, seq)

    def _remove(self, vids):
        seq = self._logged({"op": "remove", "ids": list(vids)})
        return self._sql.remove(vids, seq)

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()


"""``Store.verify`` for the packed layout: every video complete and consistent, every array's
checksum matching, no config mixed across videos, nothing left staged.  Reads every array once;
each problem is a ``Problem`` naming the video and array, so that ``l2l store repair`` can drop
exactly those (it reads ``Problem.video``, never the printed text).  Not here: repairing."""
from __future__ import annotations

import json
from typing import Sequence

from tqdm import tqdm

from .base import Problem
from .index import checksum


def verify_packed(store, expected_fields: Sequence[str] | None = None, *,
                  progress: bool = False) -> list[Problem]:
    problems = []
    idx = store.index
    expected = list(expected_fields if expected_fields is not None
                    else idx["info"].get("fields", []))
    segments = set(store._segments())
    for vid in tqdm(store.ids(), unit="video", desc="verify", disable=not progress,
                    dynamic_ncols=True):
        e = idx["videos"][vid]
        n = e["meta"]["num_moments"]
        missing = [f for f in expected if f not in e["fields"]]
        if missing:
            problems.append(Problem(vid, "", "incomplete", f"incomplete, missing {', '.join(missing)}"))
        for name, f in sorted(e["fields"].items()):
            if f["seg"] not in segments:
                problems.append(Problem(vid, name, "missing-segment", f"segment {f['seg']} is missing"))
                continue
            if f["stop"] - f["start"] != n or f["shape"][0] != n:
                problems.append(Problem(vid, name, "rows", f"{f['stop'] - f['start']} rows for {n} moments"))
                continue
            try:
                a = store._read_rows(f["seg"], f["arr"], f["start"], f["stop"])
            except Exception as ex:  # a chunk that cannot even be decompressed
                problems.append(Problem(vid, name, "unreadable",
                                        f"unreadable ({' '.join(str(ex).split())})"))
                continue
            if checksum(a.astype(f["dtype"], copy=False)) != f["crc"]:
                problems.append(Problem(vid, name, "checksum", f"checksum mismatch (stored "
                                        f"{f['crc']}, read {checksum(a)})"))
    all_fields = sorted({n for e in idx["videos"].values() for n in e["fields"]})
    for name in all_fields:
        rids = {e["fields"][name]["rec"] for e in idx["videos"].values() if name in e["fields"]}
        configs = {json.dumps(idx["records"][r]["config"], sort_keys=True) for r in rids}
        if len(configs) > 1:
            problems.append(Problem("", name, "mixed-configs",
                                    f"array {name!r} mixes {len(configs)} configs across videos"))
    staged = store._list_parcels()
    if staged:
        problems.append(Problem("", "", "staged", f"{len(staged)} staged parcels not committed "
                                "(run `l2l store commit` or rerun extract)"))
    return problems

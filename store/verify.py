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
    ix = store._ix()
    expected = list(expected_fields if expected_fields is not None
                    else ix.info().get("fields", []))
    segments = set(store._segments())
    configs: dict[str, set[str]] = {}               # field -> the records its videos use
    for vid, e in tqdm(ix.all_entries(), total=len(ix.ids()), unit="video", desc="verify",
                       disable=not progress, dynamic_ncols=True):
        n = e["meta"]["num_moments"]
        missing = [f for f in expected if f not in e["fields"]]
        if missing:
            problems.append(Problem(vid, "", "incomplete", f"incomplete, missing {', '.join(missing)}"))
        for name, f in sorted(e["fields"].items()):
            configs.setdefault(name, set()).add(f["rec"])
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
    for name in sorted(configs):
        distinct = {json.dumps(ix.record(r)["config"], sort_keys=True) for r in configs[name]}
        if len(distinct) > 1:
            problems.append(Problem("", name, "mixed-configs",
                                    f"array {name!r} mixes {len(distinct)} configs across videos"))
    staged = store._list_parcels()
    if staged:
        problems.append(Problem("", "", "staged", f"{len(staged)} staged parcels not committed "
                                "(run `l2l store commit` or rerun extract)"))
    return problems

"""The store's index at ActivityNet scale: its size and the time to parse it, which is why a store
object parses it again only after a commit replaced it (``PackedStore.index``), not per video.

Builds the index document of a store holding ``--videos`` videos with the seven usual arrays
(frames, times, frame_index, logmel, image, audio, imageaudio), as ``store/index.py`` shapes it,
and times ``json.loads`` of it (best of 3)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402

FIELDS = ("frames", "times", "frame_index", "logmel", "image", "audio", "imageaudio")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    videos = {}
    for i in range(a.videos):
        vid = f"{i:011d}"
        videos[vid] = {
            "meta": {"id": vid, "labels": ["Long jump"], "subset": "training", "duration": 117.3,
                     "fps": 29.97, "num_moments": 220, "has_audio": True,
                     "source": f"/data/activitynet/videos/v_{vid}.mp4"},
            "fields": {n: {"seg": "000123-3f2a9c1b7d4e", "arr": n, "start": 220 * i, "stop": 220 * i + 220,
                           "key": "0123456789abcdef", "upstream": {"source": "0123456789abcdef"},
                           "rec": "0123456789abcdef", "shape": [220, 512], "dtype": "float16",
                           "crc": "deadbeef"} for n in FIELDS}}
    text = json.dumps({"videos": videos}, separators=(",", ":"))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        json.loads(text)
        best = min(best, time.perf_counter() - t)
    body = table(["videos", "index size (MB)", "parse (s)"],
                 [[a.videos, f"{len(text) / 1e6:.1f}", f"{best:.2f}"]])
    print(body)
    if not a.no_record:
        record("Store index at ActivityNet scale",
               body + "\n\n- Seven arrays per video; best of 3 `json.loads`.  Paid once per commit "
               "per process (a store object re-reads the index only when its inode/mtime changed), "
               "not once per video.")


if __name__ == "__main__":
    main()

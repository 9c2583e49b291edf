"""Per video, what a run must do: which stages to run, from the store's provenance (``plan``:
a stage whose outputs are stored under the key this run gives them is skipped), whether a run
may read media files at all (``reads_media``, from the index only), a decode failure not worth
retrying (``known_failure``), and the record of how a video ended (``Outcome``).

Not here: running the stages (``work.py``) or the data-set loop (``extract.py``).
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Sequence

from ..datasets.base import VideoRecord
from ..stages import Stage
from ..stages.decode import DecodeError, source_key
from ..store import ArrayRecord, StoreError


@dataclasses.dataclass(frozen=True)
class Outcome:
    id: str
    status: str              # "done", "skipped" or "failed"
    stage: str = ""
    reason: str = ""
    seconds: float = 0.0
    moments: int = 0
    timings: dict = dataclasses.field(default_factory=dict, compare=False)  # part -> seconds


class Job:
    """One video's state while its shard is processed."""

    def __init__(self, video: VideoRecord):
        self.video, self.t0 = video, time.perf_counter()
        self.keys: dict[str, str] = {}
        self.fresh: set[str] = set()          # stages to run
        self.todo: set[str] = set()           # stages whose outputs are stored anew
        self.values: dict[str, Any] = {}
        self.arrays: dict[str, Any] = {}
        self.records: dict[str, ArrayRecord] = {}
        self.decoded: dict | None = None
        self.current = "decode"
        self.n = 0                            # moments (from decode, or the stored meta)
        self.timings: dict[str, float] = {}
        self.outcome: Outcome | None = None

    def moments(self) -> int:
        return self.n


def plan(store, job: Job, stages: Sequence[Stage], missing_reason: str) -> None:
    """Which of ``stages`` must run for ``job``'s video (``job.todo``: whose outputs are not
    stored under the key this run gives them; ``job.fresh``: those and what makes their
    unstored inputs), from the store's provenance; "skipped" when nothing is to be done."""
    video = job.video
    if video.path is None:
        raise DecodeError(video.id, missing_reason or "listed in the annotations but no media file found")
    job.keys = keys = {"source": source_key(video)}
    existing = {}
    got = store.stored([video.id]).get(video.id)
    if got is not None:
        job.n, existing = got[0].num_moments, got[1]
    for stage in stages:
        key = stage.key({i: keys[i] for i in stage.inputs})
        for o in stage.outputs:
            keys[o] = key
        kept = [o for o in stage.outputs if o not in stage.transient]
        if not all(o in existing and existing[o].key == key for o in kept):
            job.todo.add(stage.name)
    if not job.todo:
        job.outcome = Outcome(video.id, "skipped", seconds=time.perf_counter() - job.t0)
        return
    job.fresh = with_producers(stages, job.todo, existing)


def with_producers(stages: Sequence[Stage], todo: set[str], stored) -> set[str]:
    """``todo`` (names of stages that must run) and the stages making their inputs that are not
    in ``stored`` (output names): transient outputs (decode's audio windows, the teacher's
    clips) or missing ones."""
    producer = {o: s for s in stages for o in s.outputs}
    fresh = set(todo)
    for stage in reversed(stages):                 # (stages come in dependency order)
        if stage.name in fresh:
            for i in stage.inputs:
                p = producer.get(i)
                if p is not None and (i in p.transient or i not in stored):
                    fresh.add(p.name)
    return fresh


def known_failure(store, video: VideoRecord, stages: Sequence[Stage]) -> Outcome | None:
    """A decode failure already recorded for these very bytes and this decode config: the same
    file would fail the same way again, so it is not retried (unless asked)."""
    f = store.failure(video.id)
    decode = next((s for s in stages if s.name == "decode"), None)
    if not f or not f.key or decode is None or video.path is None or not video.path.is_file():
        return None
    if f.key != decode.key({"source": source_key(video)}):
        return None
    return Outcome(video.id, "failed", f.stage, f"{f.reason} (recorded earlier; "
                                                "--retry-failed tries again)")


def reads_media(store_path, videos, stages: Sequence[Stage], skip_failed: bool = True) -> bool:
    """Whether extracting ``videos`` may read a media file: some video lacks, in the store at
    ``store_path``, a stored output (of this stage config) of a stage that reads the source, or
    of one whose inputs can only come from such a stage (a transient output, like decode's
    audio windows or the teacher's clips).  When not, and the models run on a GPU (or there is
    none), the run only reads stored arrays and feeds the GPU: worker processes would each load
    the models and share one GPU for nothing, so ``extract`` runs it in one process, its reads
    spread over every core.  (Models on the CPU keep the workers: N processes of one thread
    scale better than one process of N.)  From the store's records only
    (no file is opened: a media file changed since is found, and decoded, by the run itself);
    with ``skip_failed``, a video whose failure is recorded is not retried, so not read."""
    from ..store import open_store, recorded_backend
    if not videos or recorded_backend(store_path) is None:
        return True
    configs = {s.name: json.loads(json.dumps(s.config_dict())) for s in stages}   # as stored
    try:
        store = open_store(store_path)
        for k in range(0, len(videos), 512):            # (stops at the first video to decode)
            part = [v.id for v in videos[k:k + 512]]
            stored = store.stored(part)
            failed = store.failed(part) if skip_failed else set()
            for vid in part:
                if vid not in stored and vid in failed:
                    continue
                if vid not in stored:
                    return True
                recs = stored[vid][1]
                todo = {s.name for s in stages
                        if any(o not in recs or recs[o].config != configs[s.name]
                               for o in s.outputs if o not in s.transient)}
                runs = with_producers(stages, todo, recs)
                if any("source" in s.inputs for s in stages if s.name in runs):
                    return True
    except (OSError, StoreError):
        return True
    return False

"""Extraction orchestration: which stages to run for which video, what is cached, what failed.

``plan_stages`` builds the stage objects from names and options.  ``process_video`` is the unit
of work (one video, in whatever process runs it): it works out from the store's provenance which
stages are already cached with the same key, runs only the rest, and stages the new arrays with
one atomic ``put`` — or records a one-line failure.  ``extract`` runs it over a data set, serially
or on dask workers (``pipeline/runner.py``), commits periodically and at the end, and returns a
summary.  No model or decoding code lives here.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from ..core.errors import L2LError
from ..datasets.base import Dataset, VideoRecord
from ..stages import STAGES, Stage
from ..stages.decode import DecodeError, source_fingerprint
from ..store import (ArrayRecord, Failure, StoreError, VideoMeta, create_store, library_versions,
                     open_store)

DEFAULT_STAGES = ("decode", "spectrogram")
COMMIT_EVERY = 64            # videos between periodic commits (a crash loses at most these)
COMMIT_SECONDS = 120.0


class ConfigError(L2LError, ValueError):
    """Bad stage names or options; the message says which."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    id: str
    status: str              # "done", "skipped" or "failed"
    stage: str = ""
    reason: str = ""
    seconds: float = 0.0
    moments: int = 0


@dataclasses.dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    moments: int = 0
    seconds: float = 0.0
    failures: list = dataclasses.field(default_factory=list)

    def add(self, o: Outcome) -> None:
        setattr(self, o.status, getattr(self, o.status) + 1)
        self.moments += o.moments
        if o.status == "failed":
            self.failures.append(o)

    def line(self) -> str:
        return (f"done {self.done} / skipped {self.skipped} / failed {self.failed} "
                f"({self.moments} moments in {self.seconds:.1f} s)")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def plan_stages(names: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[Stage]:
    """Stage objects in dependency order.  ``options``: stage name -> config field -> value
    (strings are converted to the field's type).  Every input of a stage must be the source or an
    output of an earlier stage."""
    options = options or {}
    unknown = [n for n in list(names) + list(options) if n not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGES)})")
    stages, produced = [], {"source"}
    for name in names:
        cls = STAGES[name]
        defaults = cls.Config()
        fields = {f.name for f in dataclasses.fields(defaults)}
        opts = options.get(name, {})
        bad = [k for k in opts if k not in fields]
        if bad:
            raise ConfigError(f"stage {name!r} has no option {', '.join(bad)} "
                              f"(options: {', '.join(sorted(fields))})")
        try:
            conf = dataclasses.replace(defaults, **{k: _coerce(v, getattr(defaults, k))
                                                     if isinstance(v, str) else v
                                                     for k, v in opts.items()})
        except (OSError, ValueError, RuntimeError) as e:   # e.g. a weights file that is not there
            raise ConfigError(f"stage {name}: {' '.join(str(e).split())}") from None
        stage = cls(conf)
        missing = [i for i in stage.inputs if i not in produced]
        if missing:
            raise ConfigError(f"stage {name!r} needs {', '.join(missing)}: add the stage that makes it "
                              "earlier in --stages")
        produced.update(stage.outputs)
        stages.append(stage)
    return stages


def stored_outputs(stages: Sequence[Stage]) -> list[str]:
    return [o for s in stages for o in s.outputs if o not in s.transient]


_SETUP: dict[tuple[str, str, str], bool] = {}


def _ensure_setup(stage: Stage, device: str) -> None:
    key = (stage.name, stage.config_hash, device)
    if key not in _SETUP:
        stage.setup(device)
        _SETUP[key] = True


_STORES: dict[str, Any] = {}


def _store(store_path: str):
    """This process's store object for ``store_path``: its index is parsed again only after a
    commit replaced it, not once per video."""
    st = _STORES.get(store_path)
    if st is None:
        st = _STORES[store_path] = open_store(store_path)
    return st


def process_video(store_path: str, video: VideoRecord, stages: Sequence[Stage], device: str = "cpu",
                  missing_reason: str = "") -> Outcome:
    """Extract one video into the store (staged; visible after the next commit)."""
    t0 = time.perf_counter()
    store = _store(store_path)
    current, keys = "decode", {}
    try:
        if video.path is None:
            raise DecodeError(video.id, missing_reason or "listed in the annotations but no media file found")
        keys = {"source": source_fingerprint(video.path)}
        existing = store.records(video.id) if video.id in store.index["videos"] else {}
        producer, todo = {}, []
        for stage in stages:
            key = stage.key({i: keys[i] for i in stage.inputs})
            for o in stage.outputs:
                keys[o], producer[o] = key, stage
            kept = [o for o in stage.outputs if o not in stage.transient]
            if not all(o in existing and existing[o].key == key for o in kept):
                todo.append(stage)
        if not todo:
            return Outcome(video.id, "skipped", seconds=time.perf_counter() - t0)
        fresh = set(s.name for s in todo)
        # A stage that must run and reads a transient (unstored) array needs its producer to run.
        for stage in reversed(stages):
            if stage.name in fresh:
                for i in stage.inputs:
                    p = producer.get(i)
                    if p is not None and (i in p.transient or i not in existing) and p.name not in fresh:
                        fresh.add(p.name)
        values: dict[str, Any] = {}
        arrays, records, decoded = {}, {}, None
        versions = library_versions()
        for stage in stages:
            if stage.name not in fresh:
                continue
            current = stage.name
            _ensure_setup(stage, device)
            need = [i for i in stage.inputs if i != "source" and i not in values]
            if need:
                values.update(store.read(video.id, need))
            out = stage.run({i: values[i] for i in stage.inputs if i != "source"},
                            source=video.path, device=device)
            if stage.name == "decode":
                decoded = out
            values.update({o: out[o] for o in stage.outputs})
            if stage in todo:
                up = {i: keys[i] for i in stage.inputs}
                for o in stage.outputs:
                    if o not in stage.transient:
                        arrays[o] = out[o]
                        records[o] = ArrayRecord(stage=stage.name, config=stage.config_dict(),
                                                 key=keys[o], upstream=up, versions=versions)
        meta = _meta(video, decoded, store)
        replace = decoded is not None and any(s.name == "decode" for s in todo)
        store.put(meta, arrays, records, replace=replace)
        return Outcome(video.id, "done", seconds=time.perf_counter() - t0, moments=meta.num_moments)
    except (DecodeError, StoreError, OSError, ValueError, RuntimeError) as e:
        where = str(video.path or video.id)
        if isinstance(e, DecodeError):
            line = f"{where}: {e.reason}"
        else:
            msg = " ".join(f"{type(e).__name__}: {e}".split())
            line = msg if where in msg else f"{where}: {msg}"
        key = keys.get("frames", "") if isinstance(e, DecodeError) and current == "decode" else ""
        store.record_failure(Failure(id=video.id, stage=current, reason=line,
                                     source=str(video.path or ""), key=key))
        return Outcome(video.id, "failed", current, line, time.perf_counter() - t0)


def known_failure(store, video: VideoRecord, stages: Sequence[Stage]) -> Outcome | None:
    """A decode failure already recorded for these very bytes and this decode config: the same
    file would fail the same way again, so it is not retried (unless asked)."""
    f = store.index["failures"].get(video.id)
    decode = next((s for s in stages if s.name == "decode"), None)
    if not f or not f.get("key") or decode is None or video.path is None or not video.path.is_file():
        return None
    if f["key"] != decode.key({"source": source_fingerprint(video.path)}):
        return None
    return Outcome(video.id, "failed", f["stage"], f"{f['reason']} (recorded earlier; "
                                                   "--retry-failed tries again)")


def _meta(video: VideoRecord, decoded: dict | None, store) -> VideoMeta:
    if decoded is None:                    # decode cached: keep its facts, refresh labels/subset
        old = store.meta(video.id)
        return dataclasses.replace(old, labels=tuple(video.labels), subset=video.subset)
    return VideoMeta(id=video.id, labels=tuple(video.labels), subset=video.subset,
                     duration=float(decoded["duration"]), fps=float(decoded["fps"]),
                     num_moments=int(len(decoded["times"])), has_audio=bool(decoded["has_audio"]),
                     source=str(video.path))


def extract(dataset: Dataset, store_path, *, stages: Sequence[Stage], subset: str | None = None,
            limit: int | None = None, device: str = "auto", workers: int = 1,
            scheduler: str | None = None, backend: str | None = None, progress: bool = True,
            missing_reason: str = "", retry_failed: bool = False) -> Summary:
    """Run ``stages`` over the data set's videos into the store at ``store_path``."""
    from .runner import run_dask, run_serial

    t0 = time.perf_counter()
    device = resolve_device(device)
    store = create_store(store_path, backend)
    store.commit()                                   # fold anything a crashed run left staged
    _record_store_info(store, dataset, stages)
    for stage in stages:                             # load models once here: a missing weight
        try:                                         # file stops the run with one line
            _ensure_setup(stage, device)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConfigError(f"stage {stage.name}: {' '.join(str(e).split())}") from None
    videos = list(dataset.subset(subset).videos)
    if limit is not None:
        videos = videos[:limit]
    summary = Summary()
    if not retry_failed:
        todo = []
        for v in videos:
            known = known_failure(store, v, stages)
            if known is None:
                todo.append(v)
            else:
                summary.add(known)
        videos = todo
    run = run_serial if (workers <= 1 and scheduler is None) else run_dask
    last = time.monotonic()
    pending = 0
    for outcome in run(str(store.path), videos, stages, device=device, workers=workers,
                       scheduler=scheduler, progress=progress, missing_reason=missing_reason):
        summary.add(outcome)
        pending += outcome.status != "skipped"
        if pending >= COMMIT_EVERY or (pending and time.monotonic() - last > COMMIT_SECONDS):
            store.commit()
            pending, last = 0, time.monotonic()
    store.commit()
    summary.seconds = time.perf_counter() - t0
    return summary


def _record_store_info(store, dataset: Dataset, stages: Sequence[Stage]) -> None:
    info = store.info()
    classes = list(dataset.classes)
    if info.get("classes") not in (None, classes):
        raise ConfigError(f"{store.path}: holds data set {info.get('dataset')!r} with another class "
                          "list; extract into a new store")
    if info.get("classes") is None:
        store.set_info("dataset", dataset.name)
        store.set_info("classes", classes)
    models = any(s.uses_gpu for s in stages)
    if models and "flops_per_moment" not in info:  # measured once, with torch's flop counter,
        from ..models.cost import flops_per_moment  # when the first model stage runs
        store.set_info("flops_per_moment", flops_per_moment(num_classes=len(classes)))
    fields = list(dict.fromkeys(list(info.get("fields", [])) + stored_outputs(stages)))
    if fields != info.get("fields"):
        store.set_info("fields", fields)
    stage_info = dict(info.get("stages", {}))
    stage_info.update({s.name: {"config": s.config_dict(), "config_hash": s.config_hash} for s in stages})
    if stage_info != info.get("stages"):
        store.set_info("stages", stage_info)

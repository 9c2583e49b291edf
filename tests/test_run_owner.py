"""One owner per run (issue 21): what a run sets up (stages and their models, the store object,
thread pools) belongs to its ``pipeline.process.Run``, is passed down explicitly and is released
when the run ends.  No module of ``pipeline/``, ``stages/`` or ``models/`` keeps a mutable cache
at module level, and a dask worker that served two runs with different students holds one
model, not two."""
from __future__ import annotations

import ast
import collections
import importlib
import os
import pkgutil
import sys
import threading
from concurrent.futures import Executor
from pathlib import Path

import pytest
import torch

from l2l.models.students import build_student, save_student
from l2l.pipeline.extract import extract, plan_stages
from l2l.pipeline.process import Run
from l2l.pipeline.runner import local_cluster, run_dask
from l2l.stages.features import Features, FeaturesConfig

MUTABLE = (dict, list, set, bytearray, collections.deque, Executor, type(threading.local()))
# Registration tables, filled once at import by decorators, never by a run: the registries.
TABLES = {("l2l.stages.base", "STAGES")}
REPO = Path(__file__).resolve().parents[1]


def _modules(package: str):
    pkg = importlib.import_module(f"l2l.{package}")
    yield pkg
    for m in pkgutil.iter_modules(pkg.__path__):
        yield importlib.import_module(f"l2l.{package}.{m.name}")


def _assigned(mod) -> set[str]:
    """The names a module's own top-level statements assign (not those it imports)."""
    tree = ast.parse(Path(mod.__file__).read_text())
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


@pytest.mark.parametrize("package", ["pipeline", "stages", "models"])
def test_no_module_level_mutable_cache(package):
    found, seen = [], 0
    for mod in _modules(package):
        for name in sorted(_assigned(mod)):
            value = getattr(mod, name, None)
            seen += 1
            if name.startswith("__") or (mod.__name__, name) in TABLES:
                continue
            if isinstance(value, MUTABLE) and not isinstance(value, type):
                found.append(f"{mod.__name__}.{name}: {type(value).__name__}")
    assert seen > 5 and not found, found


def test_a_run_releases_what_it_set_up(tmp_path):
    torch.manual_seed(0)
    ck = tmp_path / "student.pt"
    save_student(build_student(num_classes=2), ck, config={}, classes=["a", "b"])
    stage = Features(FeaturesConfig(checkpoint=str(ck))).for_device("cpu")
    copy = Features(FeaturesConfig(checkpoint=str(ck))).for_device("cpu")
    with Run(tmp_path / "s.zarr", "cpu") as run:
        run.prepare([stage, copy])
        assert stage.model is not None and stage.model is copy.model   # one model per run
        assert len(run.models) == 1
        pool = run.pool("stages")
    assert run.closed and stage.model is None and copy.model is None and not run.models
    with pytest.raises(RuntimeError):
        pool.submit(int)                                               # its threads are gone


@pytest.mark.slow
def test_a_dask_worker_that_ran_two_runs_holds_one_model(tmp_path):
    from helpers import write_video
    from l2l.datasets.base import load_dataset
    import json
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(2):
        write_video(vids / f"v_{i}.mp4", frames=32, tone_hz=300.0 + 200 * i)
    db = {str(i): {"subset": "training", "duration": 1.0, "url": "",
                   "annotations": [{"segment": [0.0, 1.0], "label": "a" if i else "b"}]}
          for i in range(2)}
    (tmp_path / "ann.json").write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    ds = load_dataset("activitynet", vids, tmp_path / "ann.json")
    store = tmp_path / "s.zarr"
    s = extract(ds, store, stages=plan_stages(["decode", "spectrogram"]), device="cpu",
                progress=False)
    assert s.done == 2
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ck = tmp_path / f"s{seed}" / "student.pt"
        save_student(build_student(num_classes=2), ck, config={"seed": seed}, classes=["a", "b"])
        checkpoints.append(ck)
    added = str(REPO) not in sys.path
    if added:
        sys.path.insert(0, str(REPO))
    cluster = local_cluster(1, silence_logs=int(os.environ.get("L2L_TEST_LOGS", "40")))
    try:
        from distributed import Client
        for ck in checkpoints:
            stages = [s.for_device("cpu") for s in plan_stages(
                ["decode", "spectrogram", "features"], {"features": {"checkpoint": str(ck)}})]

            class Started:                 # run_dask's cluster argument: already started
                seconds = 0.0

                def get(self):
                    return cluster
            outs = list(run_dask(str(store), list(ds.videos), stages, device="cpu",
                                 cluster=Started(), progress=False))
            assert [o.status for o in outs] == ["done", "done"], outs
        with Client(cluster) as client:
            held = client.run(lambda dask_worker: (
                len(dask_worker.l2l_run.models), dask_worker.l2l_run.closed,
                __import__("gc").collect() * 0 + sum(type(o).__name__ == "StudentNet"
                                                     for o in __import__("gc").get_objects())))
    finally:
        cluster.close()
        if added:
            sys.path.remove(str(REPO))
    assert list(held.values()) == [(1, False, 1)], held

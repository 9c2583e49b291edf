"""`l2l demo` runs the user's commands end to end (here with a tiny config, for speed)."""
from __future__ import annotations

import json

from l2l.cli.demo import run_in_process
from l2l.pipeline.demo import DemoConfig, demo_commands, run_demo


def test_demo_commands_are_the_documented_ones(tmp_path):
    names = [argv[0] for argv in demo_commands(tmp_path)]
    assert names == ["make-synthetic", "extract", "train-student", "extract", "train-skim",
                     "visualize", "evaluate"]
    student = demo_commands(tmp_path)[2]
    assert student[student.index("--objective") + 1] == "classify"
    assert "--student" in demo_commands(tmp_path)[3]


def test_tiny_demo_end_to_end(tmp_path):
    cfg = DemoConfig(classes=2, videos_per_class=3, duration=(6.0, 7.0), student_epochs=1,
                     student_moments=16, student_batch=8, skim_epochs=2, skim_batch=4, skim_min_steps=0,
                     device="cpu")
    lines = []
    report = run_demo(tmp_path, cfg, run=run_in_process, echo=lines.append)
    assert report == tmp_path / "eval" / "report.md" and report.is_file()
    assert [ln.split()[2] for ln in lines if ln.startswith("$ l2l")] == [
        "make-synthetic", "extract", "train-student", "extract", "train-skim", "visualize", "evaluate"]
    text = report.read_text()
    for method in ("skim", "uniform", "random", "dense", "saliency"):
        assert method in text
    pngs = [p for p in (tmp_path / "eval").glob("*.png")]
    assert len(pngs) >= 3, pngs            # both trade-off plots and the montage
    assert all(p.stat().st_size > 1000 for p in pngs)
    assert (tmp_path / "picks.png").stat().st_size > 1000
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["subset"] == "validation" and m["num_videos"] == 2
    assert set(m["methods"]) == {"skim", "uniform", "random", "dense", "saliency"}
    assert m["methods"]["skim"]["steps"] == 3

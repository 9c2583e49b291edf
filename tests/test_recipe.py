"""The README's "Running on real data sets" block, run as written, end to end.

The block is parsed out of README.md (the first ``bash`` block of that section: comment lines
dropped, ``\\`` continuations joined) and each ``l2l ...`` line is run in-process with click, in
a temporary working folder.  What is substituted, and nothing else:

- data paths: ``~/anet/videos`` and ``activity_net.v1-3.min.json`` -> a small ActivityNet-format
  set that ``l2l make-synthetic`` writes here (3 classes x 3 videos of 6 s at 8 fps: 3 moments
  each at ``grid_rate=7.5``); ``VIDEO_ID`` -> an
  extracted validation video;
- weight names: ``kinetics`` -> a random-init R(2+1)D-18 state dict saved with ``torch.save``;
  ``imagenet`` -> a random-init ResNet-18 state dict (nothing downloads);
- to keep it small, options are appended (click takes the last of a repeated option): CPU, no
  progress bars, short schedules (1 student epoch of 8 moments, 2 skim epochs), and a coarser
  moment timeline (``decode.grid_rate=7.5``: a moment every 2.13 s, 3 per video, as many teacher
  clips as before the 30 fps timeline).

One listed validation video is deleted before extraction, so the run also shows a failed video
counted in evaluate's "all listed videos" row.  The run ends with metrics.json, report.md and the
montage picture.  About a minute on 2 busy cores (the teacher on CPU is most of it): slow.
"""
from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = {"extract": ["--device", "cpu", "--no-progress", "--set", "decode.grid_rate=7.5"],
        "train-student": ["--epochs", "1", "--max-moments", "8", "--batch-size", "4",
                          "--device", "cpu", "--no-progress"],
        "train-skim": ["--epochs", "2", "--min-steps", "0", "--device", "cpu", "--no-progress"],
        "evaluate": ["--device", "cpu", "--no-progress"],
        "visualize": []}


def readme_block() -> list[str]:
    """The ``l2l`` command lines of the README's real-data block, continuations joined."""
    text = README.read_text()
    section = text[text.index("## Running on real data sets"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_readme_block_parses_into_the_recipe():
    cmds = [shlex.split(c)[1] for c in readme_block()]
    assert cmds == ["extract", "train-student", "train-student", "extract", "train-skim",
                    "evaluate", "visualize"]
    assert all(c.startswith("l2l ") for c in readme_block())


@pytest.mark.slow
def test_readme_real_data_block_runs_as_written(tmp_path, monkeypatch):
    from torchvision.models import resnet18
    from torchvision.models.video import r2plus1d_18

    from l2l.cli.main import main
    from l2l.store import open_store
    runner = CliRunner()
    syn = tmp_path / "syn"
    r = runner.invoke(main, ["make-synthetic", str(syn), "--classes", "3", "--videos-per-class",
                             "3", "--duration-min", "6", "--duration-max", "6.5", "--fps", "8", "--width", "64",
                             "--height", "48", "--val-fraction", "0.34", "--workers", "2"])
    assert r.exit_code == 0, r.output
    db = json.loads((syn / "annotations.json").read_text())["database"]
    val = sorted(v for v, e in db.items() if e["subset"] == "validation")
    assert len(val) == 3
    (syn / "videos" / f"{val[0]}.mp4").unlink()           # listed, never extracted
    torch.manual_seed(0)
    teacher, image = tmp_path / "r2plus1d_18.pt", tmp_path / "resnet18.pt"
    torch.save(r2plus1d_18().state_dict(), teacher)
    torch.save(resnet18().state_dict(), image)
    subs = {"~/anet/videos": str(syn / "videos"),
            "activity_net.v1-3.min.json": str(syn / "annotations.json"),
            "VIDEO_ID": val[1]}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("L2L_NO_DOWNLOAD", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))
    for line in readme_block():
        for a, b in subs.items():
            line = line.replace(a, b)
        argv = shlex.split(line)[1:]
        argv = [{"kinetics": str(teacher), "imagenet": str(image)}.get(a, a) for a in argv]
        argv += FAST[argv[0]]
        t0 = time.perf_counter()
        res = runner.invoke(main, argv, catch_exceptions=False)
        assert res.exit_code == 0, f"l2l {' '.join(argv)}\n{res.output}"
        print(f"l2l {argv[0]}: {time.perf_counter() - t0:.1f} s")

    m = json.loads((work / "eval" / "metrics.json").read_text())
    assert (work / "eval" / "report.md").is_file()
    assert (work / "v.png").read_bytes()[:4] == b"\x89PNG"
    assert m["num_videos"] == 2 and m["num_listed"] == 3          # the deleted one is a miss
    assert m["all_listed"]["skim"]["top1"] <= m["methods"]["skim"]["top1"] * 2 / 3 + 1e-9
    assert 1.0 < m["dense_gflops_per_moment"] < 1.2                # multiply-adds, the paper's unit
    assert m["methods"]["dense"]["torch_gflops_per_video"] == pytest.approx(
        2 * m["methods"]["dense"]["gflops_per_video"])
    # the fine-tuned student has the store's classes; the distilled one the teacher's
    store = open_store(work / "anet.zarr")
    classes = store.info()["classes"]
    assert json.loads((work / "student" / "config.json").read_text())["train"]["init"].startswith("student ")
    assert torch.load(work / "student" / "student.pt", weights_only=True)["classes"] == classes
    assert len(torch.load(work / "distilled" / "student.pt", weights_only=True)["classes"]) == 400
    assert val[0] in {f.id for f in store.failures()}

"""The command line as a user meets it: one line and exit 1 for a user's mistake (no traceback),
exit 2 for a usage error, help on every option, the same option names everywhere, and progress
bars that stay out of log files."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from helpers import write_video

TAXONOMY = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
            {"nodeId": 1, "nodeName": "Run", "parentId": 0, "parentName": "Root"},
            {"nodeId": 2, "nodeName": "Swim", "parentId": 0, "parentName": "Root"}]


def _annotations(path: Path, ids_labels: dict[str, tuple[str, str]]) -> Path:
    db = {v: {"subset": subset, "duration": 1.0, "url": "",
              "annotations": [{"segment": [0.0, 1.0], "label": label}]}
          for v, (label, subset) in ids_labels.items()}
    path.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": TAXONOMY, "database": db}))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two tiny videos, their annotation file, and a decode+spectrogram store of them."""
    root = tmp_path_factory.mktemp("cli")
    vids = root / "videos"
    vids.mkdir()
    write_video(vids / "v_a.mp4", frames=32)
    write_video(vids / "v_b.mp4", frames=32, tone_hz=880.0)
    ann = _annotations(root / "ann.json", {"a": ("Run", "training"), "b": ("Swim", "validation")})
    store = root / "store"
    r = CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(vids),
                                  "--annotations", str(ann), "--store", str(store), "--device", "cpu",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    return {"root": root, "videos": vids, "ann": ann, "store": store}


def one_error_line(args, *needles) -> str:
    """Run ``l2l args``; it must exit 1 with exactly one line ``Error: ...`` and no traceback."""
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception     # not an uncaught exception
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _extract_args(small, store, *more):
    return ["extract", "--dataset", "activitynet", "--videos", small["videos"], "--annotations",
            small["ann"], "--store", store, "--device", "cpu", "--no-progress", *more]


# ---- the four user mistakes: one line, exit 1 -------------------------------------------------
def test_a_store_path_that_is_a_file(small, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not a store")
    one_error_line(_extract_args(small, f), str(f))
    assert f.read_text() == "not a store"
    for args in (["store", "info", f], ["store", "verify", f], ["train-student", "--store", f,
                                                                  "--out", tmp_path / "s"]):
        one_error_line(args, str(f))
    h5 = tmp_path / "junk.h5"                   # a file with the HDF5 suffix that is not HDF5
    h5.write_text("not hdf5")
    one_error_line(_extract_args(small, h5), str(h5))
    one_error_line(["evaluate", "--store", h5, "--checkpoint", h5, "--out", tmp_path / "e"], str(h5))


def test_a_checkpoint_that_is_not_one(small, tmp_path):
    bogus = tmp_path / "checkpoint.pt"
    bogus.write_bytes(b"this is not a checkpoint")
    one_error_line(_extract_args(small, small["store"], "--student", bogus), str(bogus))
    one_error_line(["evaluate", "--store", small["store"], "--checkpoint", bogus,
                    "--out", tmp_path / "ev"], str(bogus))
    one_error_line(["train-skim", "--store", small["store"], "--student", bogus,
                    "--out", tmp_path / "sk", "--epochs", "1", "--no-progress"], str(bogus))
    one_error_line(["train-student", "--store", small["store"], "--out", tmp_path / "st",
                    "--init", bogus, "--epochs", "1", "--objective", "classify"], str(bogus))
    one_error_line(["visualize", "--store", small["store"], "--checkpoint", bogus, "--id", "a",
                    "--png", tmp_path / "p.png"], str(bogus))


@pytest.mark.parametrize("content", [None, b"{\"database\": ", b"\xff\xfe\x00garbage"],
                         ids=["unreadable", "truncated", "binary"])
def test_an_unreadable_or_malformed_annotation_file(small, tmp_path, content):
    ann = tmp_path / "ann.json"
    if content is None:
        ann.mkdir()                 # exists, but cannot be read as a file
    else:
        ann.write_bytes(content)
    store = tmp_path / "store"
    one_error_line(["extract", "--dataset", "activitynet", "--videos", small["videos"],
                    "--annotations", ann, "--store", store, "--no-progress"], str(ann))
    assert not store.exists()


def test_a_missing_weights_file(small, tmp_path):
    one_error_line(_extract_args(small, tmp_path / "st", "--teacher-weights", "/nope.pth"), "/nope.pth")
    assert not (tmp_path / "st").exists()
    one_error_line(["train-student", "--store", small["store"], "--out", tmp_path / "s",
                    "--objective", "classify", "--epochs", "1", "--image-weights", "/nope.pth",
                    "--audio-weights", "random", "--no-progress"], "/nope.pth")


# ---- one name per thing, help on every option -------------------------------------------------
def _commands(group=main, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield " ".join(prefix + (name,)), cmd


def test_every_option_of_every_command_has_help():
    missing = [f"l2l {name} {'/'.join(p.opts)}" for name, cmd in _commands()
               for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, missing
    assert len(list(_commands())) >= 12


def test_the_store_is_store_everywhere_and_out_is_a_folder():
    for name, cmd in _commands():
        opts = {o: p for p in cmd.params if isinstance(p, click.Option) and not p.hidden
                for o in p.opts}
        if name != "extract":
            assert "--features" not in opts or opts["--features"] is opts.get("--store"), name
        if name.startswith(("train-", "evaluate", "extract", "visualize", "store ")):
            assert "--store" in opts, name
        if "--out" in opts:
            t = opts["--out"].type
            assert isinstance(t, click.Path) and not t.file_okay and t.dir_okay, name


def test_old_spellings_still_work(small, tmp_path):
    """--features (train-skim, evaluate, visualize) and a positional STORE (l2l store ...)."""
    for args in (["store", "info", small["store"]], ["store", "info", "--store", small["store"]]):
        r = CliRunner().invoke(main, [str(a) for a in args])
        assert r.exit_code == 0 and "videos     2" in r.output, r.output
    r = CliRunner().invoke(main, ["store", "info", str(small["store"]), "--store", str(tmp_path)])
    assert r.exit_code == 2 and "two stores" in r.output
    for cmd in ("train-skim", "evaluate", "visualize"):
        params = {o for p in main.commands[cmd].params for o in getattr(p, "opts", ())}
        assert {"--store", "--features"} <= params, cmd


def test_usage_errors_exit_2():
    r = CliRunner().invoke(main, ["extract", "--no-such-option"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["store", "info"])
    assert r.exit_code == 2 and "missing the store" in r.output


def test_choices_come_from_the_registries():
    from l2l.datasets.base import ADAPTER_MODULES
    from l2l.store import BACKENDS
    opts = {o: p for p in main.commands["extract"].params for o in getattr(p, "opts", ())}
    assert list(opts["--dataset"].type.choices) == sorted(ADAPTER_MODULES)
    assert list(opts["--backend"].type.choices) == sorted(BACKENDS)
    # lists the CLI spells out so that `l2l --help` need not import torch: they must agree with
    # the constants of the modules that check them
    from l2l.models.skim import INDEXING, READOUTS
    from l2l.training.student import OBJECTIVES

    def choices(cmd, opt):
        return tuple(next(p for p in main.commands[cmd].params if opt in p.opts).type.choices)
    assert choices("train-skim", "--indexing") == INDEXING
    assert choices("train-skim", "--readout") == READOUTS
    assert choices("train-student", "--objective") == OBJECTIVES


# ---- progress: off when not a terminal, --progress forces it -----------------------------------
def test_progress_bars_stay_out_of_logs(small, tmp_path):
    """CliRunner's streams are not terminals: no bar unless --progress; with it, tqdm draws."""
    base = ["extract", "--dataset", "activitynet", "--videos", str(small["videos"]),
            "--annotations", str(small["ann"]), "--device", "cpu", "--retry-failed"]
    quiet = CliRunner().invoke(main, base + ["--store", str(tmp_path / "q")])
    loud = CliRunner().invoke(main, base + ["--store", str(tmp_path / "l"), "--progress"])
    assert quiet.exit_code == 0 and loud.exit_code == 0, (quiet.output, loud.output)
    assert "video/s" not in quiet.output and "\r" not in quiet.output, quiet.output
    assert "video" in loud.output and len(loud.output) > len(quiet.output), loud.output


def test_progress_on_verify_and_export(small, tmp_path):
    for args, label in ((["store", "verify", small["store"]], "verify"),
                        (["store", "export", small["store"], tmp_path / "x.h5"], "export")):
        quiet = CliRunner().invoke(main, [str(a) for a in args])
        assert quiet.exit_code == 0, quiet.output
        assert f"{label}:" not in quiet.output and "\r" not in quiet.output, quiet.output
        (tmp_path / "x.h5").unlink(missing_ok=True)
        loud = CliRunner().invoke(main, [str(a) for a in args] + ["--progress"])
        assert loud.exit_code == 0, loud.output
        assert f"{label}:" in loud.output and "video" in loud.output, loud.output


def test_a_piped_train_student_log_has_no_redraws(small, tmp_path):
    """3 epochs, output not a terminal: a few lines per epoch, not kilobytes of bar redraws."""
    r = CliRunner().invoke(main, ["train-student", "--store", str(small["store"]), "--out",
                                  str(tmp_path / "s"), "--objective", "classify", "--epochs", "3",
                                  "--max-moments", "2", "--batch-size", "2", "--device", "cpu",
                                  "--subset", "all", "--image-weights", "random",
                                  "--audio-weights", "random"])
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output and "it/s" not in r.output, r.output
    assert len(r.output) < 3000, len(r.output)

"""``l2l store ...``: inspect, verify, commit, repair and export a feature store.

Every subcommand takes the store as its first argument, ``l2l store info STORE``, or as
``--store STORE`` like every other command.  Errors are one line (``cli.main.L2LGroup``).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from ..store import BACKENDS
from .common import PROGRESS


def store_target(fn, *, exists: bool = True):
    """STORE positionally or ``--store STORE`` (not both, unless they agree)."""
    path = click.Path(exists=exists, path_type=Path)
    fn = click.option("--store", "store_opt", type=path, default=None,
                      help="The store, as in other commands (instead of the STORE argument).")(fn)
    return click.argument("store", type=path, required=False)(fn)


def _store_path(store, store_opt) -> Path:
    if store is not None and store_opt is not None and store != store_opt:
        raise click.UsageError(f"two stores given: {store} and --store {store_opt}")
    if store is None and store_opt is None:
        raise click.UsageError("missing the store: give STORE or --store STORE")
    return store if store is not None else store_opt


def _open(store, store_opt=None):
    from ..store import open_store
    return open_store(_store_path(store, store_opt))


@click.group("store")
def store_group():
    """Inspect and maintain a feature store."""


@store_group.command("info")
@store_target
@click.option("--failures", "show_failures", is_flag=True, help="List every failure with its reason.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(store, store_opt, show_failures, as_json):
    """Summary of STORE: videos per subset, arrays and their provenance, costs, failures."""
    st = _open(store, store_opt)
    inf = st.info()
    summary = st.summary()                      # counts from the index, not per video
    subsets = {k: v["videos"] for k, v in summary["subsets"].items()}
    n_videos = sum(subsets.values())
    moments = sum(v["moments"] for v in summary["subsets"].values())
    no_audio = sum(v["no_audio"] for v in summary["subsets"].values())
    arrays: dict[str, dict] = {}
    for name, a in summary["arrays"].items():
        part = max(a["parts"], key=lambda p: p["videos"])
        arrays[name] = {"videos": a["videos"], "stage": part["record"]["stage"],
                        "configs": {json.dumps(p["record"]["config"], sort_keys=True)
                                    for p in a["parts"]},
                        "dtype": part["dtype"], "shape": list(part["shape"])}
    fails = st.failures()
    if as_json:
        out = {"info": inf, "videos": n_videos, "subsets": dict(subsets), "moments": moments,
               "no_audio": no_audio, "failures": [f.__dict__ for f in fails],
               "arrays": {k: {**a, "configs": sorted(a["configs"])} for k, a in arrays.items()}}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"store      {st.path} ({inf['backend']}, schema {inf['schema_version']}, "
               f"generation {inf['generation']})")
    click.echo(f"dataset    {inf.get('dataset', '?')}, {len(inf.get('classes', []))} classes")
    click.echo(f"videos     {n_videos} ({', '.join(f'{k} {n}' for k, n in sorted(subsets.items())) or '-'}),"
               f" {moments} moments, {no_audio} without audio")
    for name, a in sorted(arrays.items()):
        cfgs = len(a["configs"])
        click.echo(f"array      {name:<14} {a['dtype']:<8} (N, {', '.join(map(str, a['shape']))})"
                   f"  {a['videos']} videos, stage {a['stage']}"
                   + (f"  WARNING: {cfgs} configs" if cfgs > 1 else ""))
    for name, f in sorted(inf.get("flops_per_moment", {}).items()):
        # the paper's unit, 1e9 multiply-adds; the store keeps torch's count (2 a multiply-add)
        click.echo(f"cost       {name:<14} {f / 2e9:.3f} GFLOPs per moment (multiply-adds)")
    click.echo(f"failures   {len(fails)}")
    for f in fails if show_failures else fails[:5]:
        click.echo(f"  [{f.stage}] {f.reason}")
    if len(fails) > 5 and not show_failures:
        click.echo(f"  ... {len(fails) - 5} more (--failures)")


@store_group.command("verify")
@store_target
@PROGRESS
def verify(store, store_opt, progress):
    """Check every video is complete and consistent and every checksum matches; exit 1 if not."""
    store = _store_path(store, store_opt)
    st = _open(store)
    problems = st.verify(progress=progress)
    for p in problems:
        click.echo(p)
    if problems:
        raise click.ClickException(f"{store}: {len(problems)} problem(s); `l2l store repair {store}` "
                                   "drops the affected videos so that a rerun of extract redoes "
                                   "exactly those")
    n = sum(s["videos"] for s in st.summary()["subsets"].values())
    click.echo(f"{store}: OK ({n} videos verified)")


@store_group.command("repair")
@store_target
def repair(store, store_opt):
    """Drop the videos `verify` finds broken; rerun `l2l extract` to redo exactly those.  An
    index that cannot be read is first rebuilt from its log (up to its last whole change)."""
    st = _open(store, store_opt)
    restored = st.repair_index()
    if restored:
        click.echo(restored)
    st.commit()
    bad = sorted({p.video for p in st.verify() if p.video})     # structured: no text parsing
    st.remove(bad)
    click.echo(f"dropped {len(bad)} video(s): {', '.join(bad) or '-'}; rerun `l2l extract` to redo them")


@store_group.command("migrate")
@store_target
def migrate(store, store_opt):
    """Bring STORE to this version's layout (an index kept as one JSON attribute becomes the
    SQLite index); a store already in it is left as it is."""
    st = _open(store, store_opt)
    changed = st.migrate()
    click.echo(f"{st.path}: " + ("migrated to the SQLite index" if changed else "nothing to migrate"))


@store_group.command("commit")
@store_target
def commit(store, store_opt):
    """Fold staged parcels (left by a crashed or running extract) into the store."""
    st = _open(store, store_opt)
    click.echo(commit_line(st.path, st.commit()))


def commit_line(path, r: dict) -> str:
    """``Store.commit``'s result as one line for people."""
    if not r["segments"] and not r["videos"] and not r["failures"] and not r["rejected"]:
        return f"{path}: nothing staged to commit"
    parts = [f"{r['videos']} video(s)", f"{r['failures']} failure record(s)"]
    if r["rejected"]:
        parts.append(f"{r['rejected']} rejected (an array no longer matches its checksum; the "
                     "next extract redoes them)")
    if r["superseded"]:
        parts.append(f"{r['superseded']} superseded by a later write")
    return (f"{path}: committed {', '.join(parts)} in {len(r['segments'])} new segment(s)"
            + (f"; {r['segments_removed']} unused segment(s) removed" if r["segments_removed"] else ""))


@store_group.command("export")
@click.argument("paths", nargs=-1, metavar="[STORE] OUT", type=click.Path(path_type=Path))
@click.option("--store", "store_opt", type=click.Path(exists=True, path_type=Path), default=None,
              help="The store, as in other commands (instead of the STORE argument).")
@click.option("--format", "fmt", type=click.Choice([*sorted(BACKENDS), "listen-to-look"]),
              default="hdf5",
              help="hdf5 (one file, for exchange) or zarr (a folder): a new store; listen-to-look: "
                   "the authors' feature layout and pickles, a folder their main.py reads.")
@click.option("--student", type=click.Path(exists=True, path_type=Path), default=None,
              help="listen-to-look only: also write this train-student checkpoint's Psi and "
                   "classifier as their ImageAudioClassifyModel (--weights_audioImageModel).")
@PROGRESS
def export(paths, store_opt, fmt, student, progress):
    """Copy STORE into a new store OUT (which must not exist), in one compact segment; or, with
    --format listen-to-look, write its image/audio/imageaudio features in the authors' layout."""
    from ..store import export_store
    if len(paths) != (1 if store_opt is not None else 2):
        raise click.UsageError("expected STORE OUT, or --store STORE OUT")
    store, out = (store_opt, paths[0]) if store_opt is not None else paths
    if not Path(store).exists():
        raise click.BadParameter(f"{store}: does not exist", param_hint="STORE")
    if fmt == "listen-to-look":
        from ..pipeline.release import export_release
        r = export_release(store, out, student=student, progress=progress)
        click.echo(f"exported {r['videos']} videos to {out} (listen-to-look: "
                   + ", ".join(f"{n} {k}" for k, n in r["pickles"].items())
                   + f", {r['skipped']} unlabelled or in other subsets not in the pickles; class "
                     f"order in {Path(out) / 'classes.txt'}"
                   + (f"; checkpoint {r['checkpoint']}" if r["checkpoint"] else "") + ")")
        return
    if student is not None:
        raise click.UsageError("--student goes with --format listen-to-look")
    dst = export_store(_open(store), out, fmt, progress=progress)
    click.echo(f"exported {len(dst.ids())} videos to {out} ({fmt})")


@store_group.command("import")
@functools.partial(store_target, exists=False)
@click.option("--format", "fmt", type=click.Choice(["listen-to-look"]), required=True,
              help="listen-to-look: the authors' ActivityNet release (facebookresearch/"
                   "Listen-to-Look, README \"Preparation\").")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="The release folder: image_features/, audio_features/, "
                                  "imageAudio_features/, train.pkl, val.pkl.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="ActivityNet's activity_net.v1-3.min.json: ids, labels, "
                                  "subsets, and the class order of the release's int labels.")
@PROGRESS
def import_(store, store_opt, fmt, source, annotations, progress):
    """Read the authors' released features into STORE (created if needed), bit for bit."""
    from ..pipeline.release import import_release
    store = _store_path(store, store_opt)
    r = import_release(store, source, annotations, progress=progress)
    click.echo(f"imported {r['videos']} videos ({r['moments']} moments) into {store}; "
               f"{r['failed']} failed (`l2l store info {store} --failures`)")


commands = [store_group]
